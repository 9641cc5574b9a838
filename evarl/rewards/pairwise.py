"""Pairwise preference model: P(a > b | x) from an LLM's next-token probability of "A" versus "B".

Algorithm: RLHFlow (seed 003_62f5fe925a407d7a.txt, section 2.1, "Preference model construction"): the pair is
formatted as an instruction "[CONTEXT] {x} [RESPONSE A] {a1} [RESPONSE B] {a2}" (template file
`evarl/prompts/pairwise/rlhflow.txt`) and the probability of decoding "A" is P(a1 > a2). The user turn is
rendered with the preference model's own chat template (generation prompt added), so the label is the first
assistant token. Seed 001 section 4.2.3 uses such pairwise RMs (PairRM) for SPPO.

Deviations: the paper randomizes the order at training time only; here inference also evaluates both orders
and averages, P(a > b) = (p_A(a, b) + 1 - p_A(b, a)) / 2, which cancels position bias and makes the estimate
antisymmetric (P(a > b) + P(b > a) = 1). p_A is the softmax over the two label logits only.

As a pointwise REWARDS source the batch is grouped by `Prompt.id` (all responses with the same id, wherever
they sit in the batch, are one group) and each response scores its mean win probability against the other
responses of its group; a response with no sibling in the batch cannot be compared and is failed. Inputs
longer than `max_length` have both responses cut to fit (flagged `truncated`); a context that alone does not
fit fails its items.

Device and dtype: the preference model is loaded onto the run's device (`build_reward(..., device=...)`;
None = CPU) and each batch is moved to it. `options.dtype` is float32 | bfloat16 | float16 | auto, default
auto = bfloat16 on a CUDA device, float32 on the CPU; the two label logits are compared in float32. Remote
code runs only with the source's `trust_remote_code: true` (or the older `options.trust_remote_code`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from evarl.chat import has_chat_template, render_template
from evarl.config import RewardSourceConfig
from evarl.io import load_template, read_json
from evarl.registry import REWARDS
from evarl.rewards.combine import (
    RewardBuildError,
    check_options,
    check_single_sample,
    source_trust_remote_code,
)
from evarl.rewards.judge import conversation_text, fill
from evarl.types import Prompt, RewardResult

DEFAULT_TEMPLATE = "rlhflow"
PLACEHOLDERS = ("context", "response_a", "response_b")
META_FILE = "evarl_pairwise.json"  # written by train_pairwise: template and label tokens


def label_token_ids(tokenizer: Any, labels: tuple[str, str]) -> tuple[int, int]:
    ids = []
    for lab in labels:
        enc = tokenizer.encode(lab, add_special_tokens=False)
        if len(enc) != 1:
            raise RewardBuildError(f"pairwise: label {lab!r} is {len(enc)} tokens for this tokenizer; need 1")
        ids.append(enc[0])
    if ids[0] == ids[1]:
        raise RewardBuildError(f"pairwise: labels {labels} map to the same token")
    return ids[0], ids[1]


def render_pair(tokenizer: Any, template: str, context: str, a: str, b: str) -> str:
    """The preference model's input up to (not including) the label token."""
    user = fill(template, context=context, response_a=a, response_b=b)
    if has_chat_template(tokenizer):
        return render_template(tokenizer, [{"role": "user", "content": user}], add_generation_prompt=True)
    return user + "\n"


@REWARDS.register("pairwise")
class PairwiseReward:
    """Pairwise preference model P(a > b) from next-token "A"/"B" (RLHFlow), both orders; mean win prob."""

    name = "pairwise"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: str | None = None,
        labels: tuple[str, str] = ("A", "B"),
        batch_size: int = 8,
        max_length: int = 2048,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template or load_template(DEFAULT_TEMPLATE, "pairwise", PLACEHOLDERS)
        self.labels = labels
        self.label_ids = label_token_ids(tokenizer, labels)
        self.batch_size = batch_size
        self.max_length = max_length
        self.counts = {"comparisons": 0, "truncated": 0, "failed_items": 0}

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        template: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        device: Any = None,
        **kwargs: Any,
    ) -> PairwiseReward:
        from evarl.models.loading import load_causal_lm, load_tokenizer

        p = Path(path)
        labels: tuple[str, str] = ("A", "B")
        if (p / META_FILE).exists():
            meta = read_json(p / META_FILE)
            template = template or meta.get("template")
            labels = tuple(meta.get("labels", labels))  # type: ignore[assignment]
        try:
            model = load_causal_lm(str(path), dtype, trust_remote_code, device=device)
        except ValueError as e:
            if "dtype must be" in str(e):
                raise RewardBuildError(f"pairwise: options.{e}") from e
            raise
        model.eval()
        return cls(model, load_tokenizer(str(path), trust_remote_code), template, labels, **kwargs)

    @classmethod
    def from_config(
        cls,
        cfg: RewardSourceConfig,
        *,
        policy: Any = None,
        policy_tokenizer: Any = None,
        device: Any = None,
    ) -> PairwiseReward:
        o = cfg.options
        check_options("pairwise", o, {"template", "batch_size", "max_length", "dtype", "trust_remote_code"})
        check_single_sample("pairwise", cfg)
        if not cfg.model or cfg.model == "policy":
            raise RewardBuildError("pairwise: `model` must name a preference-model directory or hub id")
        from evarl.models.loading import resolve_model_path

        template = load_template(str(o["template"]), "pairwise", PLACEHOLDERS) if o.get("template") else None
        return cls.from_path(
            resolve_model_path(cfg.model),
            template=template,
            dtype=str(o.get("dtype", "auto")),
            trust_remote_code=source_trust_remote_code(cfg),
            device=device,
            batch_size=int(o.get("batch_size", 8)),
            max_length=int(o.get("max_length", 2048)),
        )

    # ------------------------------------------------------------------ core

    def fit_pair(self, context: str, a: str, b: str) -> tuple[list[int] | None, bool]:
        """Token ids of "[CONTEXT] context [RESPONSE A] a [RESPONSE B] b" rendered as at scoring time, cut to
        ``max_length`` (both responses shortened evenly); None when even the context cannot fit. Also used by
        the pairwise trainer, so a trained model sees exactly what it will score."""
        return self._fit(context, a, b)

    def _fit(self, context: str, a: str, b: str) -> tuple[list[int] | None, bool]:
        """Token ids of the rendered pair, cutting both responses if needed; None if the context cannot fit."""
        tok = self.tokenizer
        ids = tok(render_pair(tok, self.template, context, a, b), add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_length:
            return ids, False
        overhead = len(
            tok(render_pair(tok, self.template, context, "", ""), add_special_tokens=False)["input_ids"]
        )
        budget = (self.max_length - overhead) // 2 - 2
        if budget < 8:
            return None, True
        a_ids = tok(a, add_special_tokens=False)["input_ids"][:budget]
        b_ids = tok(b, add_special_tokens=False)["input_ids"][:budget]
        a2, b2 = tok.decode(a_ids), tok.decode(b_ids)
        ids = tok(render_pair(tok, self.template, context, a2, b2), add_special_tokens=False)["input_ids"]
        return (ids[-self.max_length :] if len(ids) > self.max_length else ids), True

    def prob_first(self, contexts: list[str], a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """p_A: probability that the response shown as A wins, one order only; NaN where it cannot fit."""
        import torch

        from evarl.models.loading import device_of

        device = device_of(self.model)
        n = len(contexts)
        fitted = [self._fit(c, x, y) for c, x, y in zip(contexts, a, b)]
        truncated = np.array([t for _, t in fitted], dtype=bool)
        probs = np.full(n, np.nan)
        ok = [i for i, (ids, _) in enumerate(fitted) if ids is not None]
        ok.sort(key=lambda i: len(fitted[i][0] or []))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ia, ib = self.label_ids
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(ok), self.batch_size):
                    idx = ok[start : start + self.batch_size]
                    seqs = [fitted[i][0] for i in idx]
                    width = max(len(s) for s in seqs)  # type: ignore[arg-type]
                    input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, s in enumerate(seqs):  # left padding: the label position is the last column
                        input_ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)  # type: ignore[arg-type]
                        mask[row, width - len(s) :] = 1
                    out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                    logits = out.logits[:, -1, :].float()
                    two = torch.stack([logits[:, ia], logits[:, ib]], dim=-1)
                    p = torch.softmax(two, dim=-1)[:, 0]
                    for row, v in zip(idx, p.tolist()):
                        probs[row] = v
        finally:
            if was_training:
                self.model.train()
        self.counts["comparisons"] += len(ok)
        self.counts["truncated"] += int(truncated.sum())
        return probs, truncated

    def preference(self, prompts: list[Prompt], a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """P(a_i > b_i | x_i), both orders averaged; (probs, truncated). NaN where an input cannot fit."""
        ctx = [conversation_text(p.messages) for p in prompts]
        p_ab, t1 = self.prob_first(ctx + ctx, list(a) + list(b), list(b) + list(a))
        n = len(prompts)
        return 0.5 * (p_ab[:n] + 1.0 - p_ab[n:]), t1[:n] | t1[n:]

    def win_matrix(self, prompt: Prompt, responses: list[str]) -> np.ndarray:
        """M[i, j] = P(y_i > y_j | x) for n responses (M[i, i] = 0.5, M + M.T = 1); SPPO's preference input."""
        m, _ = self._win_matrices([(prompt, list(responses))])
        return m[0]

    def _win_matrices(
        self, groups: list[tuple[Prompt, list[str]]]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ctx: list[str] = []
        first: list[str] = []
        second: list[str] = []
        where: list[tuple[int, int, int]] = []
        for g, (p, rs) in enumerate(groups):
            c = conversation_text(p.messages)
            for i in range(len(rs)):
                for j in range(len(rs)):
                    if i != j:
                        ctx.append(c)
                        first.append(rs[i])
                        second.append(rs[j])
                        where.append((g, i, j))
        p_first, trunc = self.prob_first(ctx, first, second)
        pa = [np.full((len(rs), len(rs)), np.nan) for _, rs in groups]
        tr = [np.zeros((len(rs), len(rs)), dtype=bool) for _, rs in groups]
        for (g, i, j), v, t in zip(where, p_first, trunc):
            pa[g][i, j] = v
            tr[g][i, j] = t
        mats = []
        for g in range(len(groups)):
            m = 0.5 * (pa[g] + 1.0 - pa[g].T)
            np.fill_diagonal(m, 0.5)
            mats.append(m)
            tr[g] = tr[g] | tr[g].T
        return mats, tr

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"pairwise: {len(prompts)} prompts but {len(responses)} responses")
        members: dict[str, list[int]] = {}
        first_prompt: dict[str, Prompt] = {}
        for k, p in enumerate(prompts):
            members.setdefault(p.id, []).append(k)
            first_prompt.setdefault(p.id, p)
        ids = [pid for pid, ks in members.items() if len(ks) >= 2]
        mats, truncs = self._win_matrices(
            [(first_prompt[pid], [responses[k] for k in members[pid]]) for pid in ids]
        )
        results: list[RewardResult | None] = [None] * len(responses)
        for pid, m, tr in zip(ids, mats, truncs):
            ks = members[pid]
            for i, k in enumerate(ks):
                others = [m[i, j] for j in range(len(ks)) if j != i and math.isfinite(m[i, j])]
                info: dict[str, Any] = {"wins": [None if not math.isfinite(v) else float(v) for v in m[i]]}
                if tr[i].any():
                    info["truncated"] = True
                if not others:
                    info["error"] = "no comparison fitted in max_length"
                    results[k] = RewardResult(math.nan, failed=True, info=info)
                else:
                    results[k] = RewardResult(float(np.mean(others)), info=info)
        for pid, ks in members.items():
            if len(ks) < 2:
                results[ks[0]] = RewardResult(
                    math.nan, failed=True, info={"error": f"prompt {pid!r} has one response in the batch"}
                )
        self.counts["failed_items"] += sum(1 for r in results if r is not None and r.failed)
        return [r for r in results if r is not None]
