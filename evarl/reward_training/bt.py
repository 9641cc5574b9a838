"""Bradley-Terry reward-model training: L(theta) = -E log sigma(r(x, y_w) - r(x, y_l)).

Algorithm: seed 003_62f5fe925a407d7a.txt (RLHF Workflow), section 2.1: a pretrained backbone with a linear
scalar head, maximum likelihood of the BT model on preference pairs, AdamW with a cosine schedule and warm-up
(paper: 1 epoch, lr 2e-6, warm-up 0.03, global batch 512 on LLaMA-3-8B). Defaults here are for small backbones
on a CPU (lr 5e-5, batch 8); the head gets `head_lr` (default 10 x lr) because it starts from scratch.

Training runs on the shared engine (:mod:`evarl.engine`: optimizer with the head's own learning rate, one
schedule, data order, accumulation, clipping, mixed precision, multi-process, checkpoints and resume, atomic
save); this module keeps the pair batches and the BT loss. An update whose gradient norm is not finite is
skipped and logged (``skipped``).

Deviations: encoder backbones are mean-pooled (see `evarl.models.scalar_rm`); inputs longer than
`max_length` are truncated on the left so the response end survives, and the count is reported. The text is
rendered exactly as the `classifier` reward source renders it at scoring time (`rm_text`), so a trained model
scores the loop's responses the way it was trained.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evarl.io import read_jsonl, write_json
from evarl.reward_training.data import PreferenceRow, load_preferences


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
    mixed_precision: str = "no",
    save_every: int = 0,
) -> dict[str, Any]:
    """Train a Bradley-Terry scalar RM on a TRL preference JSONL and save it to `out_dir`.

    `backbone` is a model directory or hub id ("embedded" = SmolLM2). Returns the metrics dict that is also
    written to `out_dir/train_metrics.json` (per-step losses in `train_log.jsonl`).
    """
    import torch.nn.functional as F

    from evarl.engine import content_hash, fit
    from evarl.models.loading import load_tokenizer, resolve_model_path
    from evarl.models.scalar_rm import ScalarRewardModel

    if epochs < 1 or batch_size < 1 or lr <= 0 or max_length < 8:
        raise ValueError("train_bt: need epochs >= 1, batch_size >= 1, lr > 0, max_length >= 8")
    t0 = time.time()
    path = resolve_model_path(backbone)
    rows = load_preferences(train_file)
    eval_rows = load_preferences(eval_file) if eval_file else []
    tok = load_tokenizer(path, trust_remote_code)
    c_ids, r_ids, n_trunc = _pair_ids(tok, rows, max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    settings = rm_settings(lr, weight_decay, warmup_ratio, epochs, batch_size, max_grad_norm, mixed_precision,
                           save_every)  # fmt: skip

    def build() -> tuple[Any, list[dict[str, Any]]]:
        model = ScalarRewardModel.from_backbone(path, pooling, dtype, trust_remote_code)
        groups = [
            {"params": list(model.backbone.parameters()), "weight_decay": weight_decay},
            {"params": list(model.head.parameters()), "weight_decay": weight_decay,
             "lr": head_lr if head_lr is not None else 10 * lr},
        ]  # fmt: skip
        return model, groups

    def batch_fn(idx: list[int], model: Any, epoch: int) -> dict[str, Any]:
        ids, mask = _batch([c_ids[i] for i in idx] + [r_ids[i] for i in idx], pad)
        return {"input_ids": ids, "attention_mask": mask}

    def step_fn(model: Any, b: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        out = model(b["input_ids"], b["attention_mask"]).float()
        k = out.shape[0] // 2
        margin = out[:k] - out[k:]
        return -F.logsigmoid(margin).mean(), {"accuracy": (margin.detach() > 0).float().mean()}

    def finalize(model: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"pooling": model.pooling}
        if eval_rows:
            ev = evaluate_bt(model, tok, eval_rows, max_length)
            extra.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"], n_eval=ev["n"])
        return extra

    work = work_dir(out_dir)
    summary = fit(
        kind="bt",
        settings=settings,
        build_model=build,
        lengths=[len(c_ids[i]) + len(r_ids[i]) for i in range(len(rows))],
        batch_fn=batch_fn,
        step_fn=step_fn,
        save_fn=save_with_metrics(work, lambda m, d: (m.save_pretrained(d), tok.save_pretrained(d))),
        out_dir=work,
        seed=seed,
        progress=False,
        fingerprint={
            "backbone": str(path),
            "pooling": pooling,
            "head_lr": head_lr,
            "dtype": dtype,
            "data": content_hash([c_ids, r_ids]),
        },  # fmt: skip
        summary_extra={
            "backbone": backbone,
            "n_train": len(rows),
            "train_truncated": n_trunc,
            "lr": lr,
            "batch_size": batch_size,
        },  # fmt: skip
        final_dir=Path(out_dir),
        finalize=finalize,
        is_complete=_rm_complete,
    )
    return finish_metrics(summary, "bt", work, out_dir, t0)


SUMMARY_NAME = "train_metrics.json"


def rm_settings(
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    epochs: int,
    batch_size: int,
    max_grad_norm: float,
    mixed_precision: str,
    save_every: int,
) -> Any:
    """The engine settings of a reward-model trainer (RLHF Workflow §2.1: AdamW, cosine with warm-up); an update
    with a non-finite gradient norm is skipped."""
    from evarl.engine import TrainSettings

    return TrainSettings(learning_rate=lr, weight_decay=weight_decay, scheduler="cosine", warmup_ratio=warmup_ratio,
                         epochs=epochs, batch_size=batch_size, max_grad_norm=max_grad_norm,
                         mixed_precision=mixed_precision, save_every=save_every, skip_nonfinite=True)  # fmt: skip


def work_dir(out_dir: Path) -> Path:
    """Checkpoints and the running log live beside the output directory until the model is saved."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.train")


def _rm_complete(d: Path) -> bool:
    return (d / SUMMARY_NAME).exists() and any(d.glob("*.safetensors"))


def save_with_metrics(work: Path, save: Callable[[Any, Path], Any]) -> Callable[..., None]:
    """The engine's save function for a reward model: weights, the metrics and the per-step log."""
    from evarl.engine import SUMMARY_FILE

    def write(model: Any, state_dict: Any, d: Path, summary: dict[str, Any]) -> None:
        if state_dict is not None:  # FSDP / ZeRO-3: put the gathered weights back before saving
            model.load_state_dict(state_dict, strict=False)
        save(model, d)
        write_json(d / SUMMARY_NAME, summary)
        write_json(d / SUMMARY_FILE, summary)
        log = work / "train_log.jsonl"
        if log.exists():
            shutil.copyfile(log, d / "train_log.jsonl")

    return write


def finish_metrics(
    summary: dict[str, Any], kind: str, work: Path, out_dir: Path, t0: float
) -> dict[str, Any]:
    """The metrics dict the CLI prints (first/last training loss from the log, seconds, out_dir)."""
    from evarl.dist import is_main

    log_path = Path(out_dir) / "train_log.jsonl"
    log = read_jsonl(log_path) if log_path.exists() else []
    m = {k: v for k, v in summary.items() if not k.startswith(("final_", "mean_"))}
    m.update(kind=kind, train_loss_first=log[0]["loss"] if log else None,
             train_loss_last=log[-1]["loss"] if log else None)  # fmt: skip
    m["seconds"] = round(time.time() - t0, 2)
    m["out_dir"] = str(out_dir)
    if is_main():
        shutil.rmtree(work, ignore_errors=True)
    return m
