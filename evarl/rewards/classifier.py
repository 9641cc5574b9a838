"""Pointwise reward models: any sequence-classification RM scoring (prompt, response) text.

Covers ArmoRM-/Skywork-style `AutoModelForSequenceClassification` models (seed 001_7d3978acbe7ccf7f.txt,
section 4.2.3 uses ARMORM-8B and SKYWORKRM-27B as pointwise oracles) and the Bradley-Terry models written by
`evarl train-rm --kind bt` (seed 003_62f5fe925a407d7a.txt, section 2.1).

The text is always re-rendered with the reward model's OWN tokenizer and chat template (the user turns plus
the response as the assistant turn); token ids are never shared with the policy, which is the source of the
silent-garbage bugs in other trainers (TRL issues 1674/2523, OpenRLHF 242). A tokenizer without a chat
template gets "prompt\\n\\nresponse". Inputs are batched by length; an input longer than `max_length` is
truncated (on `truncation_side`, default left so the response survives) and flagged `info["truncated"]`.

The score is read from the model output's `.score` when it has one (ArmoRM's remote-code
`LlamaForRewardModelWithGating` returns `CustomOutput(score=...)`, the gated preference score), else from
`.logits[:, head_index]` (default head 0), else from the output tensor itself (`ScalarRewardModel`). Remote
code runs only when the source config says so (`reward.sources[i].trust_remote_code: true`, or the older
`options.trust_remote_code`); a model that needs it is otherwise refused with a message naming that field.

Device and dtype: the model is loaded onto the run's device (`build_reward(..., device=...)`; None = CPU) and
every batch is moved to it. `options.dtype` is float32 | bfloat16 | float16 | auto, default auto = bfloat16
on a CUDA device (ArmoRM/Skywork ship bf16 weights), float32 on the CPU; scores are returned as float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evarl.chat import has_chat_template, render_template
from evarl.config import RewardSourceConfig
from evarl.registry import REWARDS
from evarl.rewards.combine import (
    RewardBuildError,
    check_options,
    check_single_sample,
    source_trust_remote_code,
)
from evarl.rewards.judge import conversation_text
from evarl.types import Prompt, RewardResult


def rm_text(tokenizer: Any, messages: list[dict[str, str]], response: str) -> tuple[str, bool]:
    """(text, add_special_tokens): the conversation in the RM's own chat template, or a plain join."""
    if has_chat_template(tokenizer):
        conv = [*messages, {"role": "assistant", "content": response}]
        return render_template(tokenizer, conv, add_generation_prompt=False), False
    return conversation_text(messages) + "\n\n" + response, True


def _remote_code_refused(e: Exception) -> bool:
    return "trust_remote_code" in str(e)


def load_reward_model(
    path: str, dtype: str = "auto", trust_remote_code: bool = False, device: Any = None
) -> tuple[Any, Any]:
    """(model, tokenizer) for an evarl scalar RM directory or any AutoModelForSequenceClassification (also a
    remote-code one such as ArmoRM when `trust_remote_code`), on `device` (None = CPU) in `dtype`."""
    from evarl.models.loading import load_tokenizer, placement_kwargs, resolve_dtype
    from evarl.models.scalar_rm import ScalarRewardModel, is_scalar_reward_model

    try:
        dt = resolve_dtype(dtype, device)
    except ValueError as e:
        raise RewardBuildError(f"classifier: options.{e}") from e
    try:
        if is_scalar_reward_model(path):
            model = ScalarRewardModel.from_pretrained(path, dt, trust_remote_code, device=device)
        else:
            import torch
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(
                path,
                dtype=getattr(torch, dt),
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                **placement_kwargs(device),
            )
    except ValueError as e:
        if trust_remote_code or not _remote_code_refused(e):
            raise
        raise RewardBuildError(
            f"classifier: {path} ships its own modeling code (config.json auto_map, e.g. ArmoRM), which "
            "evarl runs only when asked: set `trust_remote_code: true` on this reward source "
            "(reward.sources[i].trust_remote_code) if you trust that code"
        ) from e
    tok = load_tokenizer(path, trust_remote_code)
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


@REWARDS.register("classifier")
class ClassifierReward:
    """Sequence-classification reward model (ArmoRM/Skywork-style or `train-rm --kind bt`), own tokenizer."""

    name = "classifier"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        max_length: int = 2048,
        head_index: int = 0,
        truncation_side: str = "left",
    ) -> None:
        if truncation_side not in ("left", "right"):
            raise RewardBuildError(
                f"classifier: truncation_side must be left or right, got {truncation_side!r}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.head_index = head_index
        self.truncation_side = truncation_side

    @classmethod
    def from_config(
        cls,
        cfg: RewardSourceConfig,
        *,
        policy: Any = None,
        policy_tokenizer: Any = None,
        device: Any = None,
    ) -> ClassifierReward:
        o = cfg.options
        check_options(
            "classifier", o, {"batch_size", "max_length", "head_index", "truncation_side", "dtype",
                              "trust_remote_code"}
        )  # fmt: skip
        check_single_sample("classifier", cfg)
        if not cfg.model or cfg.model == "policy":
            raise RewardBuildError("classifier: `model` must name a reward-model directory or hub id")
        from evarl.models.loading import resolve_model_path

        path = resolve_model_path(cfg.model)
        model, tok = load_reward_model(
            path, str(o.get("dtype", "auto")), source_trust_remote_code(cfg), device=device
        )
        return cls(
            model,
            tok,
            batch_size=int(o.get("batch_size", 8)),
            max_length=int(o.get("max_length", 2048)),
            head_index=int(o.get("head_index", 0)),
            truncation_side=str(o.get("truncation_side", "left")),
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        device: Any = None,
        **kwargs: Any,
    ) -> ClassifierReward:
        model, tok = load_reward_model(str(path), dtype, trust_remote_code, device=device)
        return cls(model, tok, **kwargs)

    def _scores(self, out: Any) -> Any:
        score = getattr(out, "score", None)  # ArmoRM-style custom outputs carry the preference score here
        if score is not None and not callable(score):
            t = score
        elif hasattr(out, "logits"):
            t = out.logits
        else:  # ScalarRewardModel returns the rewards tensor itself
            t = out
        if t.dim() == 2:
            if self.head_index >= t.shape[1]:
                raise RewardBuildError(
                    f"classifier: head_index {self.head_index} but the model has {t.shape[1]}"
                )
            t = t[:, self.head_index]
        return t.float()

    def score_texts(self, texts: list[str], add_special_tokens: list[bool]) -> tuple[list[float], list[bool]]:
        """Raw RM scores of already-rendered texts and whether each was truncated."""
        import torch

        from evarl.models.loading import device_of

        tok = self.tokenizer
        device = device_of(self.model)
        old_side = tok.truncation_side
        tok.truncation_side = self.truncation_side
        try:
            full = [len(tok(t, add_special_tokens=s)["input_ids"]) for t, s in zip(texts, add_special_tokens)]
            ids_list = [
                tok(t, add_special_tokens=s, truncation=True, max_length=self.max_length)["input_ids"]
                for t, s in zip(texts, add_special_tokens)
            ]
        finally:
            tok.truncation_side = old_side
        truncated = [n > self.max_length for n in full]
        order = sorted(range(len(texts)), key=lambda i: len(ids_list[i]))
        scores = [0.0] * len(texts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(ids_list[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = ids_list[i]
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[row, : len(ids)] = 1
                out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                for row, v in zip(idx, self._scores(out).tolist()):
                    scores[row] = float(v)
        return scores, truncated

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"classifier: {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        rendered = [rm_text(self.tokenizer, p.messages, r) for p, r in zip(prompts, responses)]
        scores, truncated = self.score_texts([t for t, _ in rendered], [s for _, s in rendered])
        return [RewardResult(s, info={"truncated": True} if tr else {}) for s, tr in zip(scores, truncated)]
