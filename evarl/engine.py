"""The one training engine under every loop: preference training, SFT, online RLOO / online DPO and both
reward-model trainers (Bradley-Terry and pairwise) run on it.

It owns what every optimizer loop needs and nothing else; the loops keep their batch -> loss code:

* an ``accelerate`` Accelerator (DDP, FSDP and DeepSpeed ZeRO-2/3 are its launch configs, ``configs/accelerate``),
  mixed precision, seeding;
* the optimizer (AdamW / RMSprop, no weight decay on norms and biases, optional per-group learning rates) and one
  learning-rate schedule (:func:`lr_multiplier`: linear warm-up, then cosine / linear / constant);
* the global batch: ``global_batch_size`` pairs per optimizer step over all processes, i.e. per-device batch x
  gradient accumulation x processes (:func:`resolve_grad_accum`), so a paper's batch means the same on 1 or 8 GPUs;
* the data order for fixed datasets (:func:`epoch_plan`: seeded, length-grouped, rank-sharded; the same global
  plan for any process count at the same global batch), gradient accumulation with ``no_sync``, clipping, metric
  reduction across ranks, the JSONL / TensorBoard / W&B log;
* resumable checkpoints (``save_every`` optimizer steps; weights, optimizer, scheduler and every rank's RNG
  state; committed by atomically replacing a ``latest`` pointer) and exact resume, refused with a clear message
  when the global batch changed;
* the final save through ``accelerator.get_state_dict``, so DDP, FSDP (full state dict) and ZeRO-3 all write a
  loadable Hugging Face model; LoRA adapters are merged so the next round loads a plain model.

:func:`fit` is the readable loop for fixed datasets (preference, SFT, reward models). The online loop drives
:class:`Engine` step by step (its batches are generated as it goes).

Checkpoints: on one process and under DDP rank 0 writes everything (other ranks send their RNG state). Under FSDP
and DeepSpeed the optimizer is sharded, so the checkpoint is ``accelerator.save_state`` (each rank writes its
shard into the same directory) and rank 0 commits it.

Testing hook: ``EVARL_SOLVER_FAIL_AFTER_STEP=N`` raises :class:`SimulatedKill` right after optimizer step N
(after that step's checkpoint, if any): how the resume tests simulate a SIGKILL.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evarl.errors import ResumeError, TrainingDiverged
from evarl.io import read_json, read_jsonl

SUMMARY_FILE = "evarl_train_summary.json"
FAIL_ENV = "EVARL_SOLVER_FAIL_AFTER_STEP"
LENGTH_GROUP_WINDOW = 16  # x batch_size items sorted by length together
_TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


class SimulatedKill(RuntimeError):
    """Raised by the EVARL_SOLVER_FAIL_AFTER_STEP testing hook."""


@dataclass
class TrainSettings:
    """What the engine reads. :meth:`from_config` takes it from a SolverConfig (or anything with these names)."""

    learning_rate: float = 2e-5
    optimizer: str = "adamw"  # adamw | rmsprop
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # absolute warm-up steps; overrides warmup_ratio
    epochs: int = 1
    batch_size: int = 4  # per device
    grad_accum: int = 1
    global_batch_size: int | None = None  # over all processes; when set, grad_accum is derived from it
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    save_every: int = 0  # optimizer steps between resumable checkpoints (0 = none)
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])
    skip_nonfinite: bool = False  # skip the update when the gradient norm is inf/nan (reward models)

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        vals = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
        vals.update(overrides)
        return cls(**vals)


# ---------------------------------------------------------------- pure helpers


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


def resolve_grad_accum(s: TrainSettings, num_processes: int) -> int:
    """Micro-batches per optimizer step on each process: from ``global_batch_size`` when set."""
    if s.global_batch_size is None:
        return s.grad_accum
    per_step = s.batch_size * num_processes
    if s.global_batch_size < per_step or s.global_batch_size % per_step:
        raise ValueError(
            f"solver.global_batch_size: {s.global_batch_size} cannot be split into batch_size={s.batch_size} x "
            f"grad_accum x {num_processes} processes; choose a global batch divisible by {per_step}"
        )
    return s.global_batch_size // per_step


def epoch_plan(
    lengths: Sequence[int], batch_size: int, grad_accum: int, seed: int, epoch: int, num_processes: int = 1
) -> list[list[list[int]]]:
    """Optimizer steps of one epoch: ``plan[step][micro_batch] = [item indices]`` (all processes).

    Order: a seeded permutation (independent of the global RNG), sorted by length (descending) inside windows of
    ``LENGTH_GROUP_WINDOW * batch_size``, cut into micro-batches, the micro-batches shuffled (same generator) and
    grouped ``grad_accum * num_processes`` per step; process r takes micro-batches ``r::num_processes`` of a step.
    The plan depends on ``grad_accum * num_processes`` only, so the same global batch gives the same steps on any
    number of processes (the last step may be short; :func:`fit` weights every micro-batch by its share of the
    step's items over all processes, so a short step is exact too).
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
    return [micro[s : s + per_step] for s in range(0, len(micro), per_step)]


def content_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (training inputs, for the resume fingerprint)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
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


def check_finite_step(
    loss: float | None,
    update: dict[str, float],
    step: int,
    kind: str,
    state_dir: Path,
    skip_nonfinite: bool = False,
) -> None:
    """Raise :class:`~evarl.errors.TrainingDiverged` when the (rank-reduced) loss of optimizer step ``step`` is
    NaN or infinite, or its gradient norm was (``update`` from :meth:`Engine.step` says ``skipped``) and the
    loop does not skip such steps (``skip_nonfinite``). Called before that step is logged or checkpointed, and
    :meth:`Engine.step` never applies a non-finite gradient, so the last good checkpoint under ``state_dir`` and
    every earlier artifact stay as they were; the message says where they are."""
    if update.get("skipped") and skip_nonfinite:
        return  # the loop skips such steps by design (reward models); the weights did not change
    if loss is not None and not math.isfinite(loss):
        what = f"the training loss became {loss}"
    elif update.get("skipped"):
        what = f"the gradient norm became {update.get('grad_norm')} (loss {loss})"
    else:
        return
    last = Engine.latest_checkpoint(state_dir)
    if last is not None:
        kept = f"the last good checkpoint ({last}) and earlier artifacts are kept"
    else:
        kept = "no checkpoint was saved before it (save_every); earlier stages' artifacts are kept"
    raise TrainingDiverged(
        f"{kind}: {what} at optimizer step {step}; training stopped and nothing from "
        f"that step was saved: {kept}. Lower the learning rate (solver.learning_rate) or check the inputs, "
        "then rerun (a changed setting restarts this training from its inputs)"
    )


STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_OS_ERROR = re.compile(r"os error (\d+)")
_LOW_FREE_BYTES = 64 << 20


def storage_errno(exc: BaseException, target: Path) -> int | None:
    """The errno of a full disk / file-size limit / quota behind a writer's own exception type, else None.

    safetensors (Rust) reports ``... (os error 27)``; ``torch.save`` (C++) only says its write position is off,
    so for a message without an errno the cause is read from the process: a finite ``RLIMIT_FSIZE`` (EFBIG) or
    less than 64 MiB free where ``target`` lives (ENOSPC)."""
    text = str(exc)
    m = _OS_ERROR.search(text)
    if m:
        code = int(m.group(1))
        return code if code in STORAGE_ERRNOS else None
    for code in STORAGE_ERRNOS:
        if os.strerror(code).lower() in text.lower():
            return code
    if not any(s in text for s in ("inline_container", "file write failed", "unexpected pos")):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        return errno.EFBIG
    folder = Path(target)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return errno.ENOSPC if shutil.disk_usage(folder).free < _LOW_FREE_BYTES else None
    except OSError:
        return None


@contextmanager
def storage_errors(target: Path) -> Iterator[None]:
    """Re-raise a full disk or a file-size limit met by a non-Python writer (torch.save, safetensors) as
    ``OSError(errno, ..., target)``, which the CLI reports in one line (exit 2). The atomic writers around it
    (``replace_dir``, the ``latest`` pointer) have already left the previous files as they were."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        code = storage_errno(e, Path(target))
        if code is None:
            raise
        raise OSError(
            code,
            f"{os.strerror(code)} while saving (disk full or file-size limit); earlier checkpoints and artifacts "
            "are kept: free space and rerun the same command to resume",
            str(target),
        ) from e


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: with weight decay, and without (norms, biases, 1-d tensors)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict[str, Any]], s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.learning_rate)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=s.learning_rate)
    raise ValueError(f"solver.optimizer: must be adamw or rmsprop, got {s.optimizer!r}")


class Trackers:
    """TensorBoard / W&B logging of each optimizer step's row (rank 0 only)."""

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


# ---------------------------------------------------------------- RNG state


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


# ---------------------------------------------------------------- the engine


def new_accelerator(mixed_precision: str, cpu: bool = False) -> Any:
    """An Accelerator for this training call. AcceleratorState is a process-wide singleton that refuses a
    different mixed-precision setting; several training calls in one process (rounds, SFT then DPO, a reward model
    then the policy) each get their own settings by clearing it first. The process group (PartialState) is kept,
    so this is safe under ``accelerate launch`` / ``torchrun``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"solver.mixed_precision: must be no, bf16 or fp16, got {mixed_precision!r}")
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


class Engine:
    """One training run: ``prepare`` the model, then per optimizer step ``micro_batch`` contexts + ``backward``
    and one ``step``; ``save_checkpoint`` / ``load_checkpoint`` for resume; ``save_model`` at the end."""

    def __init__(self, settings: TrainSettings, seed: int, device: Any = None) -> None:
        from accelerate.utils import set_seed

        self.s = settings
        # accelerate forms a CPU process group (gloo) only when told cpu=True; on a CUDA machine it also keeps a
        # `device: cpu` run off the GPUs
        cpu = not torch.cuda.is_available() or (device is not None and torch.device(device).type == "cpu")
        self.accelerator = new_accelerator(settings.mixed_precision, cpu=cpu)
        set_seed(seed)
        self.model: Any = None
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.total_steps = 0

    # ------------------------------------------------------------ facts
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def grad_accum(self) -> int:
        return resolve_grad_accum(self.s, self.num_processes)

    @property
    def global_batch(self) -> int:
        return self.s.batch_size * self.grad_accum * self.num_processes

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: parameters / optimizer state live in shards across ranks."""
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)

    def unwrap(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------ setup
    def prepare(self, model: Any, total_steps: int, groups: list[dict[str, Any]] | None = None) -> Any:
        """Optimizer + schedule for ``total_steps`` optimizer steps; the model and optimizer go through
        ``accelerator.prepare``. ``groups``: optimizer parameter groups (default: :func:`param_groups`); a group
        may carry its own ``lr`` (e.g. a reward model's fresh head), scaled by the same schedule."""
        s = self.s
        opt = build_optimizer(groups or param_groups(model, s.weight_decay), s)
        self.total_steps = total_steps
        warmup = s.warmup_steps if s.warmup_steps is not None else math.ceil(s.warmup_ratio * total_steps)
        kind = s.scheduler
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_multiplier(step, total_steps, warmup, kind)
        )
        ds = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if (
            ds is not None
        ):  # DeepSpeed clips inside its step and ignores clip_grad_norm_; "auto" would mean 1.0
            ds.deepspeed_config["gradient_clipping"] = s.max_grad_norm
            ds.deepspeed_config["train_micro_batch_size_per_gpu"] = s.batch_size
            ds.deepspeed_config["gradient_accumulation_steps"] = self.grad_accum
        # the scheduler is stepped here, once per optimizer step; accelerate's prepared scheduler would step it
        # once per process
        self.model, self.optimizer = self.accelerator.prepare(model, opt)
        return self.model

    # ------------------------------------------------------------ one step
    def micro_batch(self, sync: bool) -> Any:
        """Context for one micro-batch's forward and backward: gradients are all-reduced only on the last.
        accelerate's sync flag is set too: under DeepSpeed it marks the accumulation boundary at which the
        DeepSpeed engine steps (a step may have fewer micro-batches than usual at an epoch's end)."""
        self.accelerator.gradient_state._set_sync_gradients(sync)
        return nullcontext() if sync else self.accelerator.no_sync(self.model)

    def autocast(self) -> Any:
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss`` is already weighted by its share of the optimizer step; DeepSpeed divides every micro-batch's
        loss by its gradient_accumulation_steps, which is undone here so the step's gradient is the same."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            loss = loss * self.grad_accum
        self.accelerator.backward(loss)

    def step(self) -> dict[str, float]:
        """Clip, update, advance the schedule, clear gradients. Returns the lr used and the gradient norm."""
        grad_norm = None
        if self.s.max_grad_norm and self.s.max_grad_norm > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.s.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        finite = grad_norm is None or bool(torch.isfinite(torch.as_tensor(grad_norm)))
        # a non-finite gradient never reaches the weights (fp16: the loss scaler skips overflow steps itself and
        # must see the call to lower its scale); the loop then skips on (skip_nonfinite) or stops (TrainingDiverged)
        applied = finite or self.s.mixed_precision == "fp16"
        if applied:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        out = {"lr": lr}
        if grad_norm is not None:
            out["grad_norm"] = round(float(grad_norm), 6)
        if not applied:
            out["skipped"] = 1
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank metrics averaged over the ranks (identity on one process)."""
        return self._reduce(values, "mean")

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank metrics summed over the ranks (identity on one process)."""
        return self._reduce(values, "sum")

    def _reduce(self, values: dict[str, float], op: str) -> dict[str, float]:
        if self.num_processes == 1 or not values:
            return values
        keys = sorted(values)
        red = self.accelerator.reduce(torch.tensor([values[k] for k in keys], device=self.device), op)
        return dict(zip(keys, red.tolist()))

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(
        self, state_dir: Path, step: int, meta: dict[str, Any], extra: Callable[[Path], None] | None = None
    ) -> None:
        """Resumable state after ``step`` optimizer steps, committed by replacing ``state_dir/latest``.
        ``extra(dir)`` writes a loop's own state (e.g. the online buffer) into the same directory on rank 0."""
        from evarl.io import replace_dir

        state_dir = Path(state_dir)
        final = state_dir / f"step-{step:07d}"
        rngs = self._gather_rng()
        meta = {**meta, "step": step, "global_batch": self.global_batch, "processes": self.num_processes}
        if self.sharded:  # each rank writes its optimizer / parameter shard
            tmp = state_dir / f".{final.name}.partial"
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            self.wait()
            self.accelerator.save_state(str(tmp))
            self.wait()
            if self.is_main:
                torch.save({"scheduler": self.scheduler.state_dict(), "rng": rngs}, tmp / "evarl_sched.pt")
                if extra is not None:
                    extra(tmp)
                atomic_write_text(tmp / "meta.json", json.dumps(meta))
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        elif self.is_main:
            from safetensors.torch import save_file

            with storage_errors(final), replace_dir(final) as tmp:
                save_file(
                    {n: p.detach().contiguous().cpu() for n, p in _trainable(self.unwrap()).items()},
                    str(tmp / "trainable.safetensors"),
                )
                torch.save(
                    {
                        "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "rng": rngs,
                    },
                    tmp / "optim.pt",
                )
                if extra is not None:
                    extra(tmp)
                atomic_write_text(tmp / "meta.json", json.dumps(meta))
        if self.is_main:
            atomic_write_text(state_dir / "latest", final.name)  # the commit point
            for old in state_dir.glob("step-*"):
                if old.name != final.name:
                    shutil.rmtree(old, ignore_errors=True)
            for junk in state_dir.glob(".step-*"):
                shutil.rmtree(junk, ignore_errors=True)
        self.wait()

    def _gather_rng(self) -> list[dict[str, Any]]:
        from evarl.dist import all_gather_object

        return all_gather_object(_rng_state())

    @staticmethod
    def latest_checkpoint(state_dir: Path) -> Path | None:
        ptr = Path(state_dir) / "latest"
        if not ptr.exists():
            return None
        d = Path(state_dir) / ptr.read_text().strip()
        return d if (d / "meta.json").exists() else None

    def load_checkpoint(self, state_dir: Path, fingerprint: str) -> dict[str, Any] | None:
        """Restore the latest checkpoint made from the same inputs; None when there is none (or it is from other
        inputs, which is discarded). A checkpoint made at another global batch is refused (ResumeError)."""
        d = self.latest_checkpoint(state_dir)
        if d is None:
            return None
        meta = read_json(d / "meta.json")
        if meta.get("fingerprint") != fingerprint:
            self.accelerator.print(
                f"[evarl] {state_dir}: saved state is from different inputs; starting anew"
            )
            self.wait()
            if self.is_main:
                shutil.rmtree(state_dir, ignore_errors=True)
            self.wait()
            return None
        if int(meta.get("global_batch", self.global_batch)) != self.global_batch:
            raise ResumeError(
                f"{state_dir}: this training was checkpointed at a global batch of {meta['global_batch']} "
                f"({meta.get('processes')} processes) and would resume at {self.global_batch} "
                f"(batch_size {self.s.batch_size} x grad_accum {self.grad_accum} x {self.num_processes} processes). "
                "Resume with the same global batch (set solver.global_batch_size), or delete that directory to "
                "start the stage again."
            )
        if self.sharded:
            self.accelerator.load_state(str(d))
            blob = torch.load(d / "evarl_sched.pt", weights_only=True, map_location="cpu")
        else:
            from safetensors.torch import load_file

            weights = load_file(str(d / "trainable.safetensors"))
            params = _trainable(self.unwrap())
            if set(weights) != set(params):
                raise ResumeError(
                    f"{d}: saved trainable parameters do not match the model (LoRA settings changed?)"
                )
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(weights[n].to(p.device, p.dtype))
            blob = torch.load(d / "optim.pt", weights_only=True, map_location="cpu")
            self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        rngs = blob["rng"]
        if isinstance(rngs, dict):  # a checkpoint written by one process before the engine existed
            rngs = [rngs]
        _set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
        meta["dir"] = str(d)
        return meta

    # ------------------------------------------------------------ final save
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on rank 0 (every rank must call: FSDP / ZeRO-3 gather them)."""
        sd = self.accelerator.get_state_dict(self.model)
        return sd if self.is_main else None

    def save_model(
        self, final_dir: Path, write: Callable[[Any, dict[str, torch.Tensor] | None, Path], None]
    ) -> None:
        """Atomically write the final model on rank 0: ``write(unwrapped_model, full_state_dict, tmp_dir)``."""
        from evarl.io import replace_dir

        sd = self.full_state_dict()
        if self.is_main:
            with storage_errors(final_dir), replace_dir(final_dir) as tmp:
                write(self.unwrap(), sd, tmp)
        self.wait()

    def close(self) -> None:
        self.accelerator.free_memory()
        self.model = self.optimizer = self.scheduler = None


def save_hf_model(
    model: Any,
    state_dict: dict[str, torch.Tensor] | None,
    out: Path,
    tokenizer: Any = None,
    adapter_dir: Path | None = None,
) -> None:
    """``save_pretrained`` from the gathered full state dict; a PEFT model is merged first, so the next round loads
    a plain model. Under FSDP / ZeRO-3 the unwrapped model holds only shards: a PEFT model is then rebuilt on the
    CPU from the gathered weights before merging. With ``adapter_dir`` (``solver.lora.save_adapter``) the unmerged
    PEFT adapter is also saved there (atomically; loadable with ``peft.PeftModel.from_pretrained`` on the model
    this training started from)."""
    if hasattr(model, "merge_and_unload"):
        if state_dict is not None and not _holds_full_weights(model, state_dict):
            model = _rebuild_peft_on_cpu(model, state_dict)
        if adapter_dir is not None:
            from evarl.io import replace_dir

            with replace_dir(adapter_dir) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
        model = model.merge_and_unload()
        state_dict = None
    if hasattr(model, "config"):
        model.config.use_cache = True
    model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def _holds_full_weights(model: Any, state_dict: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(k in own and own[k].numel() == v.numel() for k, v in state_dict.items())


def _rebuild_peft_on_cpu(model: Any, state_dict: dict[str, torch.Tensor]) -> Any:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base_cfg = model.get_base_model().config
    fresh = AutoModelForCausalLM.from_config(base_cfg, dtype=next(iter(state_dict.values())).dtype)
    fresh = get_peft_model(fresh, model.peft_config["default"])
    fresh.load_state_dict(state_dict, strict=False)
    return fresh


# ---------------------------------------------------------------- the loop for fixed datasets


StepFn = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, Any]]]
BatchFn = Callable[
    [list[int], Any, int], dict[str, torch.Tensor]
]  # (item indices, model, epoch) -> CPU batch
SaveFn = Callable[[Any, dict[str, torch.Tensor] | None, Path, dict[str, Any]], None]


def fit(
    *,
    kind: str,
    settings: TrainSettings,
    build_model: Callable[[], tuple[Any, list[dict[str, Any]] | None]],
    lengths: list[int],
    batch_fn: BatchFn,
    step_fn: StepFn,
    save_fn: SaveFn,
    out_dir: Path,
    seed: int,
    progress: bool,
    fingerprint: dict[str, Any],
    summary_extra: dict[str, Any],
    device: Any = None,
    is_complete: Callable[[Path], bool] = model_is_complete,
    final_dir: Path | None = None,
    finalize: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train on a fixed dataset of ``len(lengths)`` items and save to ``final_dir`` (default ``out_dir/model``);
    resumable. ``out_dir`` holds the checkpoints (``state/``) and ``train_log.jsonl``.

    1. A complete ``final_dir`` returns its saved summary (a finished stage is never retrained).
    2. ``build_model()`` gives the model and optional optimizer groups; the engine prepares them.
    3. Each epoch follows :func:`epoch_plan`; ``grad_accum`` micro-batches per process make one optimizer step,
       each weighted by its share of the step's items over all processes (x the process count, since the
       all-reduce averages), so N processes compute the single-process gradient. A process with no micro-batch
       in a short last step joins the all-reduce with a zero-weighted one.
    4. Every ``save_every`` steps a checkpoint; a rerun resumes mid-epoch from it (bitwise on the same machine and
       thread count).
    5. Per step a row in ``out_dir/train_log.jsonl`` (loss, the loop's metrics averaged over ranks, lr, grad
       norm), the progress bar and the trackers.
    6. ``finalize(model)`` (optional, every rank) adds to the summary (e.g. a held-out accuracy), then
       ``save_fn(model, full_state_dict, tmp_dir, summary)`` writes the final directory (rank 0, atomic).
    """
    out_dir = Path(out_dir)
    final = Path(final_dir) if final_dir is not None else out_dir / "model"
    if is_complete(final):
        return read_json(final / SUMMARY_FILE)
    if not lengths:
        raise ValueError(f"{kind}: no training examples")
    check_trackers(settings.log_to)
    out_dir.mkdir(parents=True, exist_ok=True)

    engine = Engine(settings, seed, device)
    nproc, rank = engine.num_processes, engine.rank
    accum = engine.grad_accum
    plans: dict[int, list[list[list[int]]]] = {}

    def plan(epoch: int) -> list[list[list[int]]]:
        if epoch not in plans:
            plans.clear()
            plans[epoch] = epoch_plan(lengths, settings.batch_size, accum, seed, epoch, nproc)
        return plans[epoch]

    steps_per_epoch = len(plan(0))
    if steps_per_epoch == 0:
        raise ValueError(f"{kind}: {len(lengths)} examples give no full batch on {nproc} processes")
    total = steps_per_epoch * settings.epochs
    model, groups = build_model()
    model = engine.prepare(model, total, groups)

    fp_settings = {
        k: v
        for k, v in dataclasses.asdict(settings).items()
        if k not in ("save_every", "log_to", "grad_accum", "global_batch_size")
    }
    fp = content_hash({"kind": kind, "settings": fp_settings, "seed": seed, **fingerprint})

    state_dir = out_dir / "state"
    log_path = out_dir / "train_log.jsonl"
    rows: list[dict[str, Any]] = []
    start, elapsed_before, resumed_from, wandb_id = 0, 0.0, 0, None
    meta = engine.load_checkpoint(state_dir, fp)
    if meta is not None:
        start = resumed_from = int(meta["step"])
        elapsed_before = float(meta.get("seconds", 0.0))
        wandb_id = meta.get("wandb_id")
        if log_path.exists():
            rows = read_jsonl(log_path)
        rows = [r for r in rows if r["step"] <= start]
    if engine.is_main:
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))

    cfg_dict = dataclasses.asdict(settings)
    from evarl.tracking import active_tracker

    # inside an evarl run the run's one tracker takes every step (global step over rounds); a standalone call
    # (a reward model, a direct train_preference) keeps its own solver.log_to trackers
    run_tracker = active_tracker() if engine.is_main else None
    trackers = (
        Trackers(settings.log_to, out_dir, cfg_dict, wandb_id)
        if engine.is_main and run_tracker is None
        else None
    )
    fail_after = int(os.environ[FAIL_ENV]) if os.environ.get(FAIL_ENV) else None
    bar = None
    if progress and engine.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {kind}", unit="step", dynamic_ncols=True)

    t0 = time.time()
    device_ = engine.device
    model.train()
    try:
        log_file = open(log_path, "a") if engine.is_main else None  # noqa: SIM115 (closed in finally)
        for g in range(start, total):
            epoch, s = divmod(g, steps_per_epoch)
            step_all = plan(epoch)[s]
            n_step = sum(len(m) for m in step_all)  # items of this optimizer step over all processes
            mine = step_all[rank::nproc]
            work = mine or step_all[:1]
            acc: dict[str, float] = {}
            for i, mb in enumerate(work):
                w = len(mb) / n_step if mine else 0.0
                batch = {k: v.to(device_) for k, v in batch_fn(mb, model, epoch).items()}
                with engine.micro_batch(sync=i == len(work) - 1):
                    with engine.autocast():
                        loss, metrics = step_fn(model, batch)
                    engine.backward(loss * (w * nproc))
                acc["loss"] = acc.get("loss", 0.0) + w * float(loss.detach())
                for k, v in metrics.items():
                    acc[k] = acc.get(k, 0.0) + w * float(v)
            upd = engine.step()
            acc = engine.sum(acc)
            check_finite_step(
                acc.get("loss"), upd, g + 1, f"train {kind}", state_dir, settings.skip_nonfinite
            )
            row = {"step": g + 1, "epoch": epoch, **{k: round(v, 6) for k, v in acc.items()}, **upd}
            rows.append(row)
            if log_file is not None:
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            if trackers is not None:
                trackers.log(row)
            if run_tracker is not None:
                run_tracker.log_train(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    {k: f"{row[k]:.4g}" for k in ("loss", "reward_margin", "reward_accuracy") if k in row}
                )
            done = g + 1
            if settings.save_every > 0 and done % settings.save_every == 0 and done < total:
                engine.save_checkpoint(
                    state_dir,
                    done,
                    {
                        "fingerprint": fp,
                        "seconds": elapsed_before + time.time() - t0,
                        "wandb_id": trackers.wandb_id if trackers else None,
                    },
                )
            if fail_after is not None and done == fail_after:
                raise SimulatedKill(f"{FAIL_ENV}={fail_after}: simulated kill after optimizer step {done}")
    finally:
        if log_file is not None:
            log_file.close()
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
        "epochs": settings.epochs,
        "examples": len(lengths),
        "global_batch": engine.global_batch,
        "processes": nproc,
        "strategy": str(engine.accelerator.distributed_type.value),
        "final_loss": last.get("loss"),
        "mean_loss": mean("loss"),
        "seconds": round(elapsed_before + time.time() - t0, 3),
        "resumed_from_step": resumed_from,
        **summary_extra,
    }
    for key in sorted({k for r in rows for k in r} - {"step", "epoch", "loss", "lr", "grad_norm", "skipped"}):
        summary[f"final_{key}"] = last.get(key)
        summary[f"mean_{key}"] = mean(key)
    if finalize is not None:
        model.eval()
        summary.update(finalize(engine.unwrap()))
    engine.wait()
    engine.save_model(final, lambda m, sd, tmp: save_fn(m, sd, tmp, summary))
    if engine.is_main:
        shutil.rmtree(state_dir, ignore_errors=True)
    engine.wait()
    engine.close()
    return summary
