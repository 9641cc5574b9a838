"""Bradley-Terry reward-model training: L(theta) = -E log sigma(r(x, y_w) - r(x, y_l)).

Algorithm: seed 003_62f5fe925a407d7a.txt (RLHF Workflow), section 2.1: a pretrained backbone with a linear
scalar head, maximum likelihood of the BT model on preference pairs, AdamW with a cosine schedule and warm-up
(paper: 1 epoch, lr 2e-6, warm-up 0.03, global batch 512 on LLaMA-3-8B). Defaults here are for small backbones
on a CPU (lr 5e-5, batch 8); the head gets `head_lr` (default 10 x lr) because it starts from scratch.

Deviations: encoder backbones are mean-pooled (see `evarl.reward_training.models`); inputs longer than
`max_length` are truncated on the left so the response end survives, and the count is reported. The text is
rendered exactly as the `classifier` reward source renders it at scoring time (`rm_text`), so a trained model
scores the loop's responses the way it was trained.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

from evarl.reward_training.data import PreferenceRow, load_preferences


def _set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _encode(tok: Any, texts: list[tuple[str, bool]], max_length: int) -> tuple[list[list[int]], int]:
    old = tok.truncation_side
    tok.truncation_side = "left"
    try:
        ids, n_trunc = [], 0
        for t, special in texts:
            full = tok(t, add_special_tokens=special)["input_ids"]
            if len(full) > max_length:
                n_trunc += 1
                full = tok(t, add_special_tokens=special, truncation=True, max_length=max_length)["input_ids"]
            ids.append(full)
        return ids, n_trunc
    finally:
        tok.truncation_side = old


def _batch(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _pair_ids(
    tok: Any, rows: list[PreferenceRow], max_length: int
) -> tuple[list[list[int]], list[list[int]], int]:
    from evarl.rewards.classifier import rm_text

    c, tc = _encode(tok, [rm_text(tok, r.prompt, r.chosen) for r in rows], max_length)
    j, tr = _encode(tok, [rm_text(tok, r.prompt, r.rejected) for r in rows], max_length)
    return c, j, tc + tr


def evaluate_bt(
    model: Any, tok: Any, rows: list[PreferenceRow], max_length: int, batch_size: int = 16
) -> dict:
    """Accuracy and BT loss of a scalar RM on preference rows (scores in the model's eval mode)."""
    import torch
    import torch.nn.functional as F

    c_ids, r_ids, n_trunc = _pair_ids(tok, rows, max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    was = model.training
    model.eval()
    rc: list[float] = []
    rr: list[float] = []
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            ids, mask = _batch(c_ids[s : s + batch_size] + r_ids[s : s + batch_size], pad)
            out = model(ids, mask).float()
            k = len(c_ids[s : s + batch_size])
            rc += out[:k].tolist()
            rr += out[k:].tolist()
    if was:
        model.train()
    margins = torch.tensor(rc) - torch.tensor(rr)
    return {
        "accuracy": float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean()),
        "loss": float(-F.logsigmoid(margins).mean()),
        "n": len(rows),
        "truncated": n_trunc,
        "chosen_scores": rc,
        "rejected_scores": rr,
    }


def train_bt(
    backbone: str,
    train_file: Path,
    out_dir: Path,
    epochs: int = 2,
    lr: float = 5e-5,
    batch_size: int = 8,
    max_length: int = 512,
    seed: int = 0,
    eval_file: Path | None = None,
    head_lr: float | None = None,
    pooling: str | None = None,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.03,
    max_grad_norm: float = 1.0,
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Train a Bradley-Terry scalar RM on a TRL preference JSONL and save it to `out_dir`.

    `backbone` is a model directory or hub id ("embedded" = SmolLM2). Returns the metrics dict that is also
    written to `out_dir/train_metrics.json` (per-step losses in `train_log.jsonl`).
    """
    import torch
    import torch.nn.functional as F

    from evarl.models.loading import load_tokenizer, resolve_model_path
    from evarl.reward_training.models import ScalarRewardModel

    if epochs < 1 or batch_size < 1 or lr <= 0 or max_length < 8:
        raise ValueError("train_bt: need epochs >= 1, batch_size >= 1, lr > 0, max_length >= 8")
    t0 = time.time()
    _set_seed(seed)
    path = resolve_model_path(backbone)
    rows = load_preferences(train_file)
    eval_rows = load_preferences(eval_file) if eval_file else []
    tok = load_tokenizer(path, trust_remote_code)
    model = ScalarRewardModel.from_backbone(path, pooling, dtype, trust_remote_code)
    model.train()
    c_ids, r_ids, n_trunc = _pair_ids(tok, rows, max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    head_params = list(model.head.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": list(model.backbone.parameters()), "lr": lr},
            {"params": head_params, "lr": head_lr if head_lr is not None else 10 * lr},
        ],
        weight_decay=weight_decay,
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_ratio * total))
    rng = random.Random(seed)
    step = 0
    log: list[dict[str, Any]] = []
    for epoch in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = _batch([c_ids[i] for i in idx] + [r_ids[i] for i in idx], pad)
            out = model(ids, mask).float()
            margin = out[: len(idx)] - out[len(idx) :]
            loss = -F.logsigmoid(margin).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            mult = cosine_lr(step, total, warmup)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * mult
            if torch.isfinite(gnorm):
                opt.step()
            log.append({"step": step, "epoch": epoch, "loss": float(loss.detach()), "grad_norm": float(gnorm),
                        "accuracy": float((margin.detach() > 0).float().mean()), "lr": base_lrs[0] * mult})  # fmt: skip
            step += 1

    metrics: dict[str, Any] = {
        "kind": "bt",
        "backbone": backbone,
        "pooling": model.pooling,
        "n_train": len(rows),
        "train_truncated": n_trunc,
        "epochs": epochs,
        "steps": step,
        "lr": lr,
        "batch_size": batch_size,
        "train_loss_first": log[0]["loss"] if log else None,
        "train_loss_last": log[-1]["loss"] if log else None,
    }
    if eval_rows:
        ev = evaluate_bt(model, tok, eval_rows, max_length)
        metrics.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"], n_eval=ev["n"])
    metrics["seconds"] = round(time.time() - t0, 2)
    _save_atomic(out_dir, lambda d: (model.save_pretrained(d), tok.save_pretrained(d)), metrics, log)
    metrics["out_dir"] = str(out_dir)
    return metrics


def _save_atomic(out_dir: Path, save: Any, metrics: dict[str, Any], log: list[dict[str, Any]]) -> None:
    from evarl.data_io import replace_dir

    with replace_dir(out_dir) as tmp:
        save(tmp)
        (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with (tmp / "train_log.jsonl").open("w") as f:
            for r in log:
                f.write(json.dumps(r) + "\n")
