"""Pairwise preference-model training: fine-tune a causal LM to answer "A" or "B".

Algorithm: RLHFlow (seed 003_62f5fe925a407d7a.txt, section 2.1, "Preference model construction"): each pair
(x, a1, a2) becomes the instruction "[CONTEXT] {x} [RESPONSE A] {a1} [RESPONSE B] {a2}" with label "A" when
a1 is preferred, else "B"; "to mitigate position bias ... the order of the responses is randomized during
data formatting"; the model is trained as an instruction follower on the label (cross-entropy on the single
label token), and at inference P(A) is the preference. Paper: 1 epoch, lr 5e-6, cosine, warm-up 0.03.

Training runs on the shared engine (:mod:`evarl.engine`); this module keeps the A/B batches and the label loss.

Deviations: the order is drawn per pair per epoch from `seed` (a fresh coin each epoch doubles the effective
data); the loss is the full-vocabulary cross-entropy on the label token only (no prompt tokens), so nothing
else is learnt. The input is rendered exactly as the `pairwise` reward source renders it, with the model's
own chat template, and `evarl_pairwise.json` records the template and labels next to the weights.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

from evarl.io import write_json
from evarl.reward_training.bt import finish_metrics, rm_settings, save_with_metrics, work_dir
from evarl.reward_training.data import PreferenceRow, load_preferences


def _left_batch(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask


def evaluate_pairwise(source: Any, rows: list[PreferenceRow]) -> dict[str, Any]:
    """Accuracy of a PairwiseReward on preference rows: P(chosen > rejected) > 0.5 (both orders averaged)."""
    from evarl.types import Prompt

    prompts = [Prompt(id=f"row{i}", messages=r.prompt) for i, r in enumerate(rows)]
    probs, truncated = source.preference(prompts, [r.chosen for r in rows], [r.rejected for r in rows])
    ok = [p for p in probs if math.isfinite(p)]
    acc = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in ok) / len(ok) if ok else math.nan
    return {"accuracy": acc, "n": len(rows), "n_failed": len(rows) - len(ok), "truncated": int(truncated.sum()),
            "probs": [float(p) for p in probs]}  # fmt: skip


def train_pairwise(
    backbone: str,
    train_file: Path,
    out_dir: Path,
    epochs: int = 1,
    lr: float = 5e-6,
    batch_size: int = 4,
    max_length: int = 1024,
    seed: int = 0,
    eval_file: Path | None = None,
    template: str | None = None,
    labels: tuple[str, str] = ("A", "B"),
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.03,
    max_grad_norm: float = 1.0,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    mixed_precision: str = "no",
    save_every: int = 0,
) -> dict[str, Any]:
    """Train an A/B preference model on a TRL preference JSONL; save a causal-LM dir the `pairwise` source loads."""
    import torch
    import torch.nn.functional as F

    from evarl.engine import content_hash, fit
    from evarl.io import load_template
    from evarl.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from evarl.rewards.judge import conversation_text
    from evarl.rewards.pairwise import DEFAULT_TEMPLATE, META_FILE, PLACEHOLDERS, PairwiseReward

    if epochs < 1 or batch_size < 1 or lr <= 0 or max_length < 16:
        raise ValueError("train_pairwise: need epochs >= 1, batch_size >= 1, lr > 0, max_length >= 16")
    t0 = time.time()
    path = resolve_model_path(backbone)
    rows = load_preferences(train_file)
    eval_rows = load_preferences(eval_file) if eval_file else []
    tok = load_tokenizer(path, trust_remote_code)
    tmpl = template or load_template(DEFAULT_TEMPLATE, "pairwise", PLACEHOLDERS)
    # both orders of every pair are rendered once; a pair that fits in neither is left out (counted)
    renderer = PairwiseReward(None, tok, tmpl, labels, batch_size=max(1, batch_size), max_length=max_length)
    label_ids = renderer.label_ids
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    orders: list[tuple[list[int], list[int]]] = []
    n_trunc, n_skipped = 0, 0
    for r in rows:
        ctx = conversation_text(r.prompt)
        (ab, t1), (ba, t2) = (
            renderer.fit_pair(ctx, r.chosen, r.rejected),
            renderer.fit_pair(ctx, r.rejected, r.chosen),
        )
        if ab is None or ba is None:
            n_skipped += 1
            continue
        n_trunc += int(t1 or t2)
        orders.append((ab, ba))
    if not orders:
        raise ValueError(f"{train_file}: no preference pair fits in max_length={max_length}")

    def swapped(i: int, epoch: int) -> bool:
        """A fresh coin per pair per epoch, from (seed, epoch, pair) only (randomized order against position
        bias; independent of batching and of the number of processes)."""
        return random.Random(f"{seed}|{epoch}|{i}").random() < 0.5

    def batch_fn(idx: list[int], model: Any, epoch: int) -> dict[str, Any]:
        seqs = [orders[i][1] if swapped(i, epoch) else orders[i][0] for i in idx]
        ids, mask = _left_batch(seqs, pad)
        tgt = [label_ids[1] if swapped(i, epoch) else label_ids[0] for i in idx]
        return {"input_ids": ids, "attention_mask": mask, "target": torch.tensor(tgt, dtype=torch.long)}

    def step_fn(model: Any, b: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, -1, :].float()
        tgt = b["target"]
        two = torch.stack([logits[:, label_ids[0]], logits[:, label_ids[1]]], -1)
        acc = (two.argmax(-1) == (tgt == label_ids[1]).long()).float().mean()
        return F.cross_entropy(logits, tgt), {"accuracy": acc}

    def finalize(model: Any) -> dict[str, Any]:
        if not eval_rows:
            return {}
        source = PairwiseReward(
            model, tok, tmpl, labels, batch_size=max(1, batch_size), max_length=max_length
        )
        ev = evaluate_pairwise(source, eval_rows)
        return {"eval_accuracy": ev["accuracy"], "n_eval": ev["n"], "eval_failed": ev["n_failed"]}

    def save(model: Any, d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        write_json(d / META_FILE, {"template": tmpl, "labels": list(labels)})

    work = work_dir(out_dir)
    summary = fit(
        kind="pairwise",
        settings=rm_settings(
            lr, weight_decay, warmup_ratio, epochs, batch_size, max_grad_norm, mixed_precision, save_every
        ),  # fmt: skip
        build_model=lambda: (load_causal_lm(path, dtype, trust_remote_code), None),
        lengths=[max(len(a), len(b)) for a, b in orders],
        batch_fn=batch_fn,
        step_fn=step_fn,
        save_fn=save_with_metrics(work, save),
        out_dir=work,
        seed=seed,
        progress=False,
        fingerprint={
            "backbone": str(path),
            "template": tmpl,
            "labels": list(labels),
            "dtype": dtype,
            "data": content_hash(orders),
        },  # fmt: skip
        summary_extra={
            "backbone": backbone,
            "n_train": len(rows),
            "train_truncated": n_trunc,
            "train_skipped": n_skipped,
            "lr": lr,
            "batch_size": batch_size,
        },  # fmt: skip
        final_dir=Path(out_dir),
        finalize=finalize,
        is_complete=lambda d: (d / META_FILE).exists() and (d / "train_metrics.json").exists(),
    )
    return finish_metrics(summary, "pairwise", work, out_dir, t0)
