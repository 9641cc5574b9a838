"""Pairwise preference-model training: fine-tune a causal LM to answer "A" or "B".

Algorithm: RLHFlow (seed 003_62f5fe925a407d7a.txt, section 2.1, "Preference model construction"): each pair
(x, a1, a2) becomes the instruction "[CONTEXT] {x} [RESPONSE A] {a1} [RESPONSE B] {a2}" with label "A" when
a1 is preferred, else "B"; "to mitigate position bias ... the order of the responses is randomized during
data formatting"; the model is trained as an instruction follower on the label (cross-entropy on the single
label token), and at inference P(A) is the preference. Paper: 1 epoch, lr 5e-6, cosine, warm-up 0.03.

Deviations: the order is drawn per pair per epoch from `seed` (a fresh coin each epoch doubles the effective
data); the loss is the full-vocabulary cross-entropy on the label token only (no prompt tokens), so nothing
else is learnt. The input is rendered exactly as the `pairwise` reward source renders it, with the model's
own chat template, and `evarl_pairwise.json` records the template and labels next to the weights.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from evarl.reward_training.bt import _save_atomic, _set_seed, cosine_lr
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
) -> dict[str, Any]:
    """Train an A/B preference model on a TRL preference JSONL; save a causal-LM dir the `pairwise` source loads."""
    import torch
    import torch.nn.functional as F

    from evarl.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from evarl.rewards.judge import conversation_text, load_template
    from evarl.rewards.pairwise import DEFAULT_TEMPLATE, META_FILE, PLACEHOLDERS, PairwiseReward

    if epochs < 1 or batch_size < 1 or lr <= 0 or max_length < 16:
        raise ValueError("train_pairwise: need epochs >= 1, batch_size >= 1, lr > 0, max_length >= 16")
    t0 = time.time()
    _set_seed(seed)
    path = resolve_model_path(backbone)
    rows = load_preferences(train_file)
    eval_rows = load_preferences(eval_file) if eval_file else []
    tok = load_tokenizer(path, trust_remote_code)
    model = load_causal_lm(path, dtype, trust_remote_code)
    tmpl = template or load_template(DEFAULT_TEMPLATE, PLACEHOLDERS, "pairwise")
    source = PairwiseReward(model, tok, tmpl, labels, batch_size=max(1, batch_size), max_length=max_length)
    label_ids = source.label_ids
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_ratio * total))
    rng = random.Random(seed)
    log: list[dict[str, Any]] = []
    step, n_trunc, n_skipped = 0, 0, 0
    model.train()
    for epoch in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for s in range(0, len(order), batch_size):
            seqs, targets = [], []
            for i in order[s : s + batch_size]:
                r = rows[i]
                swap = rng.random() < 0.5  # randomized order against position bias
                a, b = (r.rejected, r.chosen) if swap else (r.chosen, r.rejected)
                ids, truncated = source._fit(conversation_text(r.prompt), a, b)
                n_trunc += int(truncated)
                if ids is None:
                    n_skipped += 1
                    continue
                seqs.append(ids)
                targets.append(label_ids[1] if swap else label_ids[0])
            if not seqs:
                continue
            ids, mask = _left_batch(seqs, pad)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
            tgt = torch.tensor(targets, dtype=torch.long)
            loss = F.cross_entropy(logits, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            mult = cosine_lr(step, total, warmup)
            for g in opt.param_groups:
                g["lr"] = lr * mult
            if torch.isfinite(gnorm):
                opt.step()
            two = torch.stack([logits[:, label_ids[0]], logits[:, label_ids[1]]], -1)
            acc = float((two.argmax(-1) == (tgt == label_ids[1]).long()).float().mean())
            log.append({"step": step, "epoch": epoch, "loss": float(loss.detach()), "accuracy": acc,
                        "grad_norm": float(gnorm), "lr": lr * mult})  # fmt: skip
            step += 1
    model.eval()
    metrics: dict[str, Any] = {
        "kind": "pairwise",
        "backbone": backbone,
        "n_train": len(rows),
        "train_truncated": n_trunc,
        "train_skipped": n_skipped,
        "epochs": epochs,
        "steps": step,
        "lr": lr,
        "batch_size": batch_size,
        "train_loss_first": log[0]["loss"] if log else None,
        "train_loss_last": log[-1]["loss"] if log else None,
    }
    if eval_rows:
        ev = evaluate_pairwise(source, eval_rows)
        metrics.update(eval_accuracy=ev["accuracy"], n_eval=ev["n"], eval_failed=ev["n_failed"])
    metrics["seconds"] = round(time.time() - t0, 2)

    def save(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        (d / META_FILE).write_text(json.dumps({"template": tmpl, "labels": list(labels)}, indent=2) + "\n")

    _save_atomic(out_dir, save, metrics, log)
    metrics["out_dir"] = str(out_dir)
    return metrics
