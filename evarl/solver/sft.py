"""Supervised fine-tuning on the solver's engine: response-only NLL on chat-format instruction data.

Used for the SFT initialisation of seed 002 §3.1.1 (M_1 = M_0 fine-tuned on instruction-following IFT data plus
evaluation-fine-tuning EFT data, i.e. judge prompts paired with the judgement to emit), and for any warm start
before preference rounds.

Data (JSONL, one example a line), TRL's formats:

* conversational ``{"messages": [{"role": ..., "content": ...}, ...]}``: the *last* assistant turn is the
  target, every turn before it is the prompt (earlier assistant turns are context, not trained on);
* prompt-completion ``{"prompt": str | [messages], "completion": str | [assistant message]}``.

Loss: ``-sum_t log pi(y_t | x, y_<t) / #response tokens`` over the micro-batch (prompt tokens masked), with
the same tokenisation as preference training (chat template with generation prompt + response + EOS), the same
truncation, data order, optimizer, schedule, LoRA, mixed precision, logging, checkpoint/resume and atomic save
as :func:`evarl.solver.trainer.train_preference`. Gradient accumulation weights micro-batches by their number of
examples (token-weighted within a micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evarl.engine import SUMMARY_FILE, content_hash, model_is_complete
from evarl.io import DataError, iter_jsonl, read_json
from evarl.solver.logprobs import collate_sequences, encode_prompt, encode_response, response_logps
from evarl.solver.trainer import train_policy


@dataclass
class SFTExample:
    prompt: list[dict[str, str]]
    completion: str


def _check_messages(msgs: Any, where: str, field: str) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: field {field!r}: expected a non-empty list of messages")
    out = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            missing = (
                "a message object" if not isinstance(m, dict) else "role" if "role" not in m else "content"
            )
            raise DataError(
                f"{where}: field '{field}[{j}]': missing {missing} (expected {{'role', 'content'}})"
            )
        if m["role"] not in ("system", "user", "assistant"):
            raise DataError(f"{where}: field '{field}[{j}].role': unknown role {m['role']!r}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise DataError(f"{where}: field '{field}[{j}].content': empty {m['role']} turn")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def sft_example_from_row(row: dict[str, Any], where: str = "example") -> SFTExample:
    """One :class:`SFTExample` from a ``messages`` or ``prompt``/``completion`` row; errors name ``where``."""
    if "messages" in row:
        msgs = _check_messages(row["messages"], where, "messages")
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DataError(f"{where}: field 'messages': no assistant turn to train on")
        if not any(m["role"] == "user" for m in msgs[:last]):
            raise DataError(f"{where}: field 'messages': no user turn before the last assistant turn")
        return SFTExample(msgs[:last], msgs[last]["content"])
    if "prompt" in row and "completion" in row:
        p = row["prompt"]
        prompt = (
            [{"role": "user", "content": p}] if isinstance(p, str) else _check_messages(p, where, "prompt")
        )
        if isinstance(p, str) and not p.strip():
            raise DataError(f"{where}: field 'prompt': empty prompt")
        c = row["completion"]
        if isinstance(c, list):
            cm = _check_messages(c, where, "completion")
            if len(cm) != 1 or cm[0]["role"] != "assistant":
                raise DataError(f"{where}: field 'completion': expected one assistant message")
            c = cm[0]["content"]
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"{where}: field 'completion': expected a non-empty string")
        return SFTExample(prompt, c)
    raise DataError(
        f"{where}: expected a 'messages' list or 'prompt' and 'completion' fields, got {sorted(row)}"
    )


def load_sft_examples(path: str | Path) -> list[SFTExample]:
    """SFT examples from a JSONL file (bad rows stop with ``file:line: field: problem``)."""
    return [sft_example_from_row(row, f"{path}:{i}") for i, row in iter_jsonl(path)]


def train_sft(
    model_path: str,
    examples: list[SFTExample] | list[dict[str, Any]],
    cfg: Any,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    device: Any = None,
) -> dict[str, Any]:
    """Fine-tune ``model_path`` on ``examples`` (SFTExample or raw rows) and save to ``out_dir/model``.

    ``cfg`` is a :class:`evarl.config.SolverConfig` (its preference-loss fields are unused). Returns the summary
    (steps, final/mean loss, seconds, tokens), also saved as ``out_dir/model/evarl_train_summary.json``.
    """
    from evarl.models.loading import load_tokenizer

    done = Path(out_dir) / "model"
    if model_is_complete(done):  # a finished stage: nothing to tokenise or train
        return read_json(done / SUMMARY_FILE)
    exs = [
        e if isinstance(e, SFTExample) else sft_example_from_row(e, f"examples[{i}]")
        for i, e in enumerate(examples)
    ]
    tokenizer = load_tokenizer(model_path)
    prompt_len = min(cfg.max_prompt_length, cfg.max_length - 1)
    prompts = [encode_prompt(tokenizer, e.prompt, prompt_len) for e in exs]
    responses = [
        encode_response(tokenizer, e.completion, cfg.max_length - len(p)) for p, e in zip(prompts, exs)
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def batch_fn(idx: list[int], model: Any, epoch: int) -> dict[str, torch.Tensor]:
        return collate_sequences([prompts[i] for i in idx], [responses[i] for i in idx], pad)

    def step_fn(model: Any, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sums, lengths = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
        nll = -sums.float().sum() / lengths.sum().clamp(min=1)
        return nll, {}

    return train_policy(
        kind="sft",
        model_path=model_path,
        tokenizer=tokenizer,
        lengths=[len(p) + len(r) for p, r in zip(prompts, responses)],
        batch_fn=batch_fn,
        step_fn=step_fn,
        cfg=cfg,
        out_dir=Path(out_dir),
        seed=seed,
        progress=progress,
        data_hash=content_hash([[p, r] for p, r in zip(prompts, responses)]),
        summary_extra={"tokens": sum(len(p) + len(r) for p, r in zip(prompts, responses))},
        device=device,
    )
