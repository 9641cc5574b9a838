"""The offline solver trainer: preference optimisation (DPO / IPO / SPPO / SimPO / ORPO / DPO+NLL ...) on
``accelerate``, and the engine SFT shares (seed 001 §3.3.1 "optimization"; seed 003 §3.3).

One readable loop, top to bottom (:func:`_train`):

1. If ``out_dir/model`` is complete, return its saved summary (a finished stage is never retrained).
2. Load the policy from ``model_path`` (float32 master weights unless ``solver.param_dtype``), optionally wrap it
   in a PEFT LoRA adapter, enable gradient checkpointing; AdamW or RMSprop; warmup + cosine/linear/constant.
3. Each epoch's data order is a permutation from ``torch.Generator().manual_seed(seed, epoch)``, never the global
   RNG; inside windows of ``16 x batch_size`` pairs the pairs are sorted by length (length-grouped batches,
   as HF's ``LengthGroupedSampler``), cut into micro-batches whose order is shuffled again, and
   ``grad_accum`` micro-batches make one optimizer step.
4. Every ``save_every`` optimizer steps the resumable state (trainable weights, optimizer, scheduler, step,
   RNG states, log so far) is written to ``out_dir/state/step-N`` and committed by atomically replacing the
   ``out_dir/state/latest`` pointer. A rerun with the same arguments resumes mid-epoch from it and ends with
   weights bitwise identical to an uninterrupted run (same machine, same torch thread count).
5. Per optimizer step: a row in ``out_dir/train_log.jsonl`` (``step, loss, reward_margin, reward_accuracy,
   chosen_logp, rejected_logp, lr`` ...), the tqdm postfix, and TensorBoard / W&B when in ``solver.log_to``.
6. The final model (LoRA merged, so the next round loads a plain model) and tokenizer are saved as safetensors
   into a temp dir that is renamed to ``out_dir/model``; the summary is written inside it before the rename.

The reference model is never loaded here: its log-probs come precomputed (``ref_logps``, from
:func:`evarl.solver.logprobs.compute_reference_logps`), and reference-free losses (SimPO, ORPO) need none.

Testing hook: with ``EVARL_SOLVER_FAIL_AFTER_STEP=N`` in the environment the trainer raises
:class:`SimulatedKill` right after optimizer step ``N`` (and after that step's checkpoint, if any), which is
how the resume tests simulate a SIGKILL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evarl.solver.logprobs import (
    collate_pairs,
    collate_pairs_shared,
    encode_pairs,
    pair_logps,
    supports_prompt_sharing,
)
from evarl.solver.losses import LossInputs, get_loss
from evarl.types import Pair

SUMMARY_FILE = "evarl_train_summary.json"
FAIL_ENV = "EVARL_SOLVER_FAIL_AFTER_STEP"
LENGTH_GROUP_WINDOW = 16  # x batch_size pairs sorted by length together
_TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


class SimulatedKill(RuntimeError):
    """Raised by the EVARL_SOLVER_FAIL_AFTER_STEP testing hook."""


StepFn = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
BatchFn = Callable[[list[int], Any], dict[str, torch.Tensor]]  # (item indices, model) -> CPU batch


# ---------------------------------------------------------------- small pure helpers


def lr_multiplier(step: int, total: int, warmup: int, kind: str) -> float:
    """LR factor at optimizer step ``step`` (0-based): linear warmup from 0, then cosine / linear / constant."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    raise ValueError(f"solver.scheduler: unknown schedule {kind!r} (cosine | linear | constant)")


def epoch_plan(
    lengths: Sequence[int], batch_size: int, grad_accum: int, seed: int, epoch: int, num_processes: int = 1
) -> list[list[list[int]]]:
    """Optimizer steps of one epoch: ``plan[step][micro_batch] = [item indices]`` (all processes).

    Order: a seeded permutation (independent of the global RNG), sorted by length (descending) inside windows of
    ``LENGTH_GROUP_WINDOW * batch_size``, cut into micro-batches, the micro-batches shuffled (same generator) and
    grouped ``grad_accum * num_processes`` per step.
    With several processes only complete groups are kept, so every process gets the same number of batches.
    """
    n = len(lengths)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g).tolist()
    window = LENGTH_GROUP_WINDOW * batch_size
    order: list[int] = []
    for s in range(0, n, window):
        order.extend(sorted(perm[s : s + window], key=lambda i: (-lengths[i], i)))
    micro = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    # shuffle the micro-batches too, or a dataset smaller than one window would be in length order every epoch
    micro = [micro[i] for i in torch.randperm(len(micro), generator=g).tolist()]
    per_step = grad_accum * num_processes
    if num_processes > 1:
        micro = micro[: len(micro) // num_processes * num_processes]
    return [micro[s : s + per_step] for s in range(0, len(micro), per_step)]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def model_is_complete(model_dir: Path) -> bool:
    """A saved model directory with weights, config and the training summary."""
    return (
        (model_dir / SUMMARY_FILE).exists()
        and (model_dir / "config.json").exists()
        and any(model_dir.glob("*.safetensors"))
    )


def check_trackers(log_to: Sequence[str]) -> None:
    """Raise if a tracker listed in ``solver.log_to`` is not installed (before any compute)."""
    for i, name in enumerate(log_to):
        if name == "jsonl":
            continue
        mod = _TRACKERS.get(name)
        if mod is None:
            raise ValueError(f"solver.log_to[{i}]: unknown logger {name!r} (jsonl | tensorboard | wandb)")
        if importlib.util.find_spec(mod) is None:
            raise ModuleNotFoundError(
                f"solver.log_to[{i}]: {name!r} is listed but the {mod!r} package is not installed "
                f"(`pip install {mod}` or `pip install evarl[tracking]`, or remove it from solver.log_to)"
            )


class _Trackers:
    def __init__(self, log_to: Sequence[str], out_dir: Path, config: dict, resume_id: str | None) -> None:
        self.tb = None
        self.wandb = None
        self.wandb_id = resume_id
        if "tensorboard" in log_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        if "wandb" in log_to:
            import wandb

            self.wandb_id = resume_id or wandb.util.generate_id()
            self.wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "evarl"),
                name=out_dir.name,
                dir=str(out_dir),
                config=config,
                id=self.wandb_id,
                resume="allow",
            )

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# ---------------------------------------------------------------- resumable state


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = st["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), int(npst[2]), int(npst[3]), npst[4]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_state(
    state_dir: Path, model: Any, optimizer: Any, scheduler: Any, step: int, extra: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    from evarl.data_io import replace_dir

    final = state_dir / f"step-{step:07d}"
    with replace_dir(final) as tmp:
        save_file(
            {n: p.detach().contiguous().cpu() for n, p in _trainable(model).items()},
            str(tmp / "trainable.safetensors"),
        )
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
            tmp / "optim.pt",
        )
        _atomic_write_text(tmp / "meta.json", json.dumps({"step": step, **extra}))
    _atomic_write_text(state_dir / "latest", final.name)  # the commit point
    for old in state_dir.glob("step-*"):
        if old.name != final.name:
            shutil.rmtree(old, ignore_errors=True)
    for junk in state_dir.glob(".step-*"):
        shutil.rmtree(junk, ignore_errors=True)


def _latest_state(state_dir: Path) -> Path | None:
    ptr = state_dir / "latest"
    if not ptr.exists():
        return None
    d = state_dir / ptr.read_text().strip()
    return d if (d / "meta.json").exists() and (d / "optim.pt").exists() else None


def _load_state(d: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights = load_file(str(d / "trainable.safetensors"))
    params = _trainable(model)
    if set(weights) != set(params):
        raise RuntimeError(f"{d}: saved trainable parameters do not match the model (LoRA settings changed?)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    blob = torch.load(d / "optim.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    _set_rng_state(blob["rng"])
    return json.loads((d / "meta.json").read_text())


# ---------------------------------------------------------------- model setup


_PARAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _build_model(model_path: str, cfg: Any) -> Any:
    from transformers import AutoModelForCausalLM

    dtype_name = getattr(cfg, "param_dtype", "float32")
    if dtype_name not in _PARAM_DTYPES:
        raise ValueError(f"solver.param_dtype: must be float32 or bfloat16, got {dtype_name!r}")
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=_PARAM_DTYPES[dtype_name], use_safetensors=True
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = cfg.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lc.r,
                lora_alpha=lc.alpha,
                lora_dropout=lc.dropout,
                target_modules=list(lc.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def _build_optimizer(model: Any, cfg: Any) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.learning_rate)
    raise ValueError(f"solver.optimizer: must be adamw or rmsprop, got {cfg.optimizer!r}")


def _save_final(model: Any, tokenizer: Any, out_dir: Path, summary: dict[str, Any]) -> Path:
    from evarl.data_io import replace_dir

    final = out_dir / "model"
    with replace_dir(final) as tmp:
        if hasattr(model, "merge_and_unload"):  # PEFT: the next round loads a plain model
            model = model.merge_and_unload()
        model.config.use_cache = True
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return final


# ---------------------------------------------------------------- the loop


def _new_accelerator(cls: Any, mixed_precision: str) -> Any:
    """An Accelerator for this call. AcceleratorState is a process-wide singleton that refuses a different
    mixed-precision setting; several training calls in one process (rounds, SFT then DPO) each get their own
    settings by clearing it first. The process group (PartialState) is kept, so this is safe under
    ``accelerate launch``."""
    from accelerate.state import AcceleratorState, GradientState

    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"solver.mixed_precision: must be no, bf16 or fp16, got {mixed_precision!r}")
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return cls(mixed_precision=mixed_precision)


def _train(
    *,
    kind: str,
    model_path: str,
    tokenizer: Any,
    lengths: list[int],
    batch_fn: BatchFn,
    step_fn: StepFn,
    cfg: Any,
    out_dir: Path,
    seed: int,
    progress: bool,
    data_hash: str,
    summary_extra: dict[str, Any],
) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    model_dir = out_dir / "model"
    if model_is_complete(model_dir):
        return json.loads((model_dir / SUMMARY_FILE).read_text())
    if not lengths:
        raise ValueError(f"{kind}: no training examples")
    check_trackers(cfg.log_to)
    out_dir.mkdir(parents=True, exist_ok=True)

    mp = getattr(cfg, "mixed_precision", "no")
    accelerator = _new_accelerator(Accelerator, mp)
    set_seed(seed)
    model = _build_model(model_path, cfg)
    optimizer = _build_optimizer(model, cfg)

    plans: dict[int, list[list[list[int]]]] = {}

    def plan(epoch: int) -> list[list[list[int]]]:
        if epoch not in plans:
            plans.clear()
            plans[epoch] = epoch_plan(
                lengths, cfg.batch_size, cfg.grad_accum, seed, epoch, accelerator.num_processes
            )
        return plans[epoch]

    steps_per_epoch = len(plan(0))
    if steps_per_epoch == 0:
        raise ValueError(
            f"{kind}: {len(lengths)} examples give no full batch on {accelerator.num_processes} processes"
        )
    total = steps_per_epoch * cfg.epochs
    warmup = math.ceil(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total, warmup, cfg.scheduler)
    )
    model, optimizer = accelerator.prepare(model, optimizer)

    cfg_dict = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    fp_cfg = {k: v for k, v in cfg_dict.items() if k not in ("save_every", "log_to")}
    fingerprint = _hash(
        {
            "kind": kind,
            "model": str(model_path),
            "cfg": fp_cfg,
            "seed": seed,
            "data": data_hash,
            "processes": accelerator.num_processes,
        }
    )

    state_dir = out_dir / "state"
    log_path = out_dir / "train_log.jsonl"
    rows: list[dict[str, Any]] = []
    start, elapsed_before, resumed_from, wandb_id = 0, 0.0, 0, None
    latest = _latest_state(state_dir)
    if latest is not None:
        meta = json.loads((latest / "meta.json").read_text())
        if meta.get("fingerprint") != fingerprint:
            accelerator.print(
                f"[evarl] {state_dir}: saved state is from different inputs; starting from scratch"
            )
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            meta = _load_state(latest, accelerator.unwrap_model(model), optimizer, scheduler)
            start = resumed_from = int(meta["step"])
            elapsed_before = float(meta.get("seconds", 0.0))
            wandb_id = meta.get("wandb_id")
            if log_path.exists():
                rows = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
            rows = [r for r in rows if r["step"] <= start]
    if accelerator.is_main_process:
        _atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))

    trackers = _Trackers(cfg.log_to, out_dir, cfg_dict, wandb_id) if accelerator.is_main_process else None
    fail_after = int(os.environ[FAIL_ENV]) if os.environ.get(FAIL_ENV) else None
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {kind}", unit="step", dynamic_ncols=True)

    t0 = time.time()
    device = accelerator.device
    model.train()
    rank, nproc = accelerator.process_index, accelerator.num_processes
    try:
        with open(log_path, "a") as log_file:
            for g in range(start, total):
                epoch, s = divmod(g, steps_per_epoch)
                step_micro = plan(epoch)[s][rank::nproc]
                n_step = sum(len(m) for m in step_micro)
                acc: dict[str, float] = {}
                for i, mb in enumerate(step_micro):
                    batch = {k: v.to(device) for k, v in batch_fn(mb, model).items()}
                    sync = i == len(step_micro) - 1
                    with accelerator.no_sync(model) if not sync else nullcontext():
                        with accelerator.autocast():
                            loss, metrics = step_fn(model, batch)
                        accelerator.backward(loss * (len(mb) / n_step))
                    w = len(mb) / n_step
                    acc["loss"] = acc.get("loss", 0.0) + w * float(loss.detach())
                    for k, v in metrics.items():
                        acc[k] = acc.get(k, 0.0) + w * float(v)
                grad_norm = None
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                if nproc > 1:
                    keys = sorted(acc)
                    red = accelerator.reduce(torch.tensor([acc[k] for k in keys], device=device), "mean")
                    acc = dict(zip(keys, red.tolist()))
                row = {"step": g + 1, "epoch": epoch, **{k: round(v, 6) for k, v in acc.items()}, "lr": lr}
                if grad_norm is not None:
                    row["grad_norm"] = round(float(grad_norm), 6)
                rows.append(row)
                if accelerator.is_main_process:
                    log_file.write(json.dumps(row) + "\n")
                    log_file.flush()
                    if trackers is not None:
                        trackers.log(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {k: f"{row[k]:.4g}" for k in ("loss", "reward_margin", "reward_accuracy") if k in row}
                    )
                done = g + 1
                if cfg.save_every > 0 and done % cfg.save_every == 0 and done < total:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        _save_state(
                            state_dir,
                            accelerator.unwrap_model(model),
                            optimizer,
                            scheduler,
                            done,
                            {
                                "fingerprint": fingerprint,
                                "seconds": elapsed_before + time.time() - t0,
                                "wandb_id": trackers.wandb_id if trackers else None,
                            },
                        )
                    accelerator.wait_for_everyone()
                if fail_after is not None and done == fail_after:
                    raise SimulatedKill(
                        f"{FAIL_ENV}={fail_after}: simulated kill after optimizer step {done}"
                    )
    finally:
        if bar is not None:
            bar.close()
        if trackers is not None:
            trackers.close()

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return sum(vals) / len(vals) if vals else None

    last = rows[-1] if rows else {}
    summary: dict[str, Any] = {
        "kind": kind,
        "steps": total,
        "epochs": cfg.epochs,
        "examples": len(lengths),
        "final_loss": last.get("loss"),
        "mean_loss": mean("loss"),
        "seconds": round(elapsed_before + time.time() - t0, 3),
        "resumed_from_step": resumed_from,
        **summary_extra,
    }
    for key in ("reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp"):
        if key in last:
            summary[f"final_{key}"] = last[key]
            summary[f"mean_{key}"] = mean(key)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_final(accelerator.unwrap_model(model), tokenizer, out_dir, summary)
        shutil.rmtree(state_dir, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return summary


# ---------------------------------------------------------------- preference training


def _aligned_ref(pairs: Sequence[Pair], ref_logps: list[dict]) -> tuple[list[float], list[float]]:
    rows = ref_logps
    if rows and all("pair_index" in r for r in rows):
        rows = sorted(rows, key=lambda r: r["pair_index"])
    if len(rows) != len(pairs):
        raise ValueError(
            f"ref_logps: {len(rows)} rows for {len(pairs)} pairs (recompute the reference log-probs)"
        )
    for i, (p, r) in enumerate(zip(pairs, rows)):
        if r.get("prompt_id") != p.prompt_id:
            raise ValueError(
                f"ref_logps row {i}: prompt_id {r.get('prompt_id')!r} does not match pair {p.prompt_id!r}"
            )
    return [float(r["chosen_logp"]) for r in rows], [float(r["rejected_logp"]) for r in rows]


def train_preference(
    model_path: str,
    pairs: list[Pair],
    ref_logps: list[dict] | None,
    cfg: Any,
    out_dir: Path,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the policy at ``model_path`` on ``pairs`` with loss ``cfg.loss``; save to ``out_dir/model``.

    ``ref_logps`` (rows of :func:`~evarl.solver.logprobs.compute_reference_logps`, same order as ``pairs``) is
    required when the loss needs a reference and ignored otherwise. Returns the summary (also saved as
    ``out_dir/model/evarl_train_summary.json``): steps, final/mean loss, reward margin and accuracy, seconds.
    """
    from evarl.models.loading import load_tokenizer

    done = Path(out_dir) / "model"
    if model_is_complete(done):  # a finished stage: nothing to tokenise or train
        return json.loads((done / SUMMARY_FILE).read_text())
    loss_fn = get_loss(cfg.loss)
    need_ref = bool(getattr(loss_fn, "needs_reference", True))
    if need_ref and ref_logps is None:
        raise ValueError(f"solver.loss={cfg.loss!r} needs reference log-probs; pass ref_logps")
    if need_ref and ref_logps is not None:
        ref_c, ref_r = _aligned_ref(pairs, ref_logps)
    else:
        ref_c = ref_r = None
    tokenizer = load_tokenizer(model_path)
    enc = encode_pairs(tokenizer, pairs, cfg.max_prompt_length, cfg.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    win_c = [p.meta.get("chosen_win_prob") for p in pairs]
    win_r = [p.meta.get("rejected_win_prob") for p in pairs]
    # SPPO: a pair without preference-model probabilities gets the hard ones (1 for y+, 0 for y-)
    has_win = any(w is not None for w in win_c + win_r)
    win_c = [1.0 if w is None else float(w) for w in win_c]
    win_r = [0.0 if w is None else float(w) for w in win_r]

    share: dict[str, bool] = {}

    def batch_fn(idx: list[int], model: Any) -> dict[str, torch.Tensor]:
        if "on" not in share:  # decided once, on the first batch, for the prepared model
            share["on"] = bool(getattr(cfg, "share_prompt", True)) and supports_prompt_sharing(model)
        b = (collate_pairs_shared if share["on"] else collate_pairs)([enc[i] for i in idx], pad)
        if ref_c is not None:
            b["ref_chosen"] = torch.tensor([ref_c[i] for i in idx], dtype=torch.float32)
            b["ref_rejected"] = torch.tensor([ref_r[i] for i in idx], dtype=torch.float32)
        if has_win:
            b["win_chosen"] = torch.tensor([win_c[i] for i in idx], dtype=torch.float32)
            b["win_rejected"] = torch.tensor([win_r[i] for i in idx], dtype=torch.float32)
        return b

    def step_fn(model: Any, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pc, pr, lc, lr = pair_logps(model, b)
        inp = LossInputs(
            policy_chosen_logps=pc.float(),
            policy_rejected_logps=pr.float(),
            chosen_lengths=lc,
            rejected_lengths=lr,
            ref_chosen_logps=b.get("ref_chosen"),
            ref_rejected_logps=b.get("ref_rejected"),
            chosen_win_prob=b.get("win_chosen"),
            rejected_win_prob=b.get("win_rejected"),
        )
        return loss_fn(inp, cfg)

    data_hash = _hash(
        [[e.prompt_ids, e.chosen_ids, e.rejected_ids] for e in enc]
        + [ref_c, ref_r, win_c if has_win else None, win_r if has_win else None]
    )
    return _train(
        kind="preference",
        model_path=model_path,
        tokenizer=tokenizer,
        lengths=[e.length for e in enc],
        batch_fn=batch_fn,
        step_fn=step_fn,
        cfg=cfg,
        out_dir=Path(out_dir),
        seed=seed,
        progress=progress,
        data_hash=data_hash,
        summary_extra={"loss": cfg.loss, "pairs": len(pairs), "tokens": sum(e.length for e in enc)},
    )
