"""One experiment-tracker run per evarl run: TensorBoard (the default), trackio (local, works offline) and W&B.

Configured by the `tracking` section::

    tracking:
      backends: [tensorboard]   # any of tensorboard | trackio | wandb; [] = no tracker
      project: evarl            # trackio / W&B project
      run_name: null            # trackio / W&B run name (default: the run's `name`)

What one run logs, by tag prefix and x axis:

* ``round/...`` against the round (0 = the base policy): the creator's informativeness summary (n, mean and a
  95% normal interval), sampled and evolved counts (children, kept, dropped), the reward statistics of the
  solver's responses (n, mean, interval, failed), pair counts (and skipped prompts by reason), the round's
  training summary (steps, final / mean loss and the loss's metrics) and the held-out numbers (mean reward
  with n and interval, IFEval accuracies);
* ``train/...`` against one global optimizer step over all rounds: every row of each round's
  ``train/train_log.jsonl`` (loss, reward margin / accuracy, lr, grad norm);
* ``online/...`` against the online step: every row of ``online/steps.jsonl``.

Only process 0 logs. The manifest's ``tracking`` entry keeps each backend's run identity, so a resumed
``evarl run`` continues the same tracker run: TensorBoard writes into the same ``<run>/tensorboard`` directory,
trackio reopens the run by name, W&B by id. ``solver.log_to`` (tensorboard / wandb) is the
older, per-round spelling; its entries are added to ``tracking.backends`` (with a deprecation note).

Bottom layer: no evarl imports; the loops pass their config and run objects in.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# backend name -> the package it needs
BACKENDS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}
# x axis of each kind of row (W&B: the step metric; TensorBoard and trackio: the step)
AXES = {"round": "round", "train": "train/global_step", "online": "online/step"}
TB_DIR = "tensorboard"  # inside the run directory
LEGACY_LOG_TO = ("tensorboard", "wandb")  # solver.log_to entries that are tracker backends
Z95 = 1.959963984540054  # two-sided 95% normal quantile

_active: Tracker | None = None


def backend_problem(name: str, path: str) -> str | None:
    """Why tracker ``name`` (at config path ``path``) cannot be used: unknown, or its package is not installed."""
    if name not in BACKENDS:
        return f"{path}: unknown tracker {name!r}; known: {', '.join(BACKENDS)}"
    if importlib.util.find_spec(BACKENDS[name]) is None:
        return f"{path}: {name!r} is not installed (pip install 'evarl[{name}]', or leave it out)"
    return None


def backend_problems(backends: Sequence[str], path: str = "tracking.backends") -> list[str]:
    """Unknown or uninstalled backends, each with its config path and how to install it."""
    found = (backend_problem(name, f"{path}[{i}]") for i, name in enumerate(backends))
    return [p for p in found if p]


def project_problem(project: str, backends: Sequence[str], path: str = "tracking.project") -> str | None:
    """Why ``project`` cannot name the trackio / W&B project (empty; a name trackio reserves), or None."""
    if not str(project).strip():
        return f"{path}: must be a non-empty name"
    if "trackio" in backends and importlib.util.find_spec("trackio") is not None:
        from trackio.sqlite_storage import SQLiteStorage

        try:
            SQLiteStorage.validate_project_name(project)
        except ValueError as exc:
            return f"{path}: {exc}"
    return None


def requested_backends(backends: Sequence[str], log_to: Sequence[str]) -> list[str]:
    """``tracking.backends`` plus the tracker entries of the deprecated ``solver.log_to``, without repeats."""
    out = list(dict.fromkeys(backends))
    out += [x for x in log_to if x in LEGACY_LOG_TO and x not in out]
    return out


def legacy_note(log_to: Sequence[str]) -> str | None:
    """The deprecation note for ``solver.log_to`` entries other than jsonl, or None."""
    legacy = [x for x in log_to if x in LEGACY_LOG_TO]
    if not legacy:
        return None
    return (
        f"solver.log_to: {', '.join(legacy)} is deprecated; it is added to tracking.backends, which logs the whole "
        "run (every round, one global training step) as one tracker run; list it under tracking.backends instead"
    )


def _scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested mapping as flat ``a/b/c`` keys (booleans, strings and None are left out)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_scalars(v, key + "/"))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[key] = float(v)
    return out


def mean_interval(values: Sequence[float]) -> dict[str, float]:
    """n, mean and a 95% normal interval of the mean (mean +- 1.96 s / sqrt(n), sample std; n < 2: no interval)."""
    n = len(values)
    if n == 0:
        return {"n": 0}
    mean = sum(values) / n
    out = {"n": float(n), "mean": mean}
    if n > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = Z95 * sd / math.sqrt(n)
        out.update(ci_low=mean - half, ci_high=mean + half)
    return out


class Tracker:
    """The tracker run of one evarl run; a no-op with no ``backends`` or when not ``live`` (processes other than 0).

    ``ids`` are the backend run identities from an earlier invocation (the manifest's ``tracking.ids``); with
    them the same runs are continued, else new ones are started. :attr:`ids` afterwards holds the identities to
    store.
    """

    def __init__(
        self,
        backends: Sequence[str],
        run_dir: Path,
        project: str,
        run_name: str,
        ids: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        live: bool = True,
    ) -> None:
        self.backends = list(backends)  # what the run asked for (the same on every process)
        self.live = live  # False on processes other than 0: nothing is opened or logged there
        self.ids: dict[str, Any] = dict(ids or {})
        self.train_offset = 0  # optimizer steps of the earlier rounds: the global step of this round's step 0
        self.closed = False
        self._tb: Any = None
        self._trackio: Any = None
        self._wandb: Any = None
        conf = dict(config or {})
        if not live:
            return
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / TB_DIR))
            self.ids["tensorboard"] = TB_DIR
        if "trackio" in self.backends:
            import trackio

            old = self.ids.get("trackio")
            self._trackio = trackio.init(
                project=project,
                name=old["name"] if old else run_name,
                config=conf,
                resume="allow" if old else "never",
                embed=False,
                auto_log_cpu=False,
                auto_log_gpu=False,
            )
            self.ids["trackio"] = {"name": self._trackio.name, "id": getattr(self._trackio, "id", None)}
        if "wandb" in self.backends:
            import wandb

            run_id = self.ids.get("wandb") or uuid.uuid4().hex[:12]  # W&B ids: lower-case letters and digits
            self._wandb = wandb.init(
                project=project, name=run_name, id=run_id, resume="allow", dir=str(run_dir), config=conf
            )
            for axis in AXES.values():
                self._wandb.define_metric(axis)
            for kind, axis in AXES.items():
                self._wandb.define_metric(f"{kind}/*", step_metric=axis)
            self.ids["wandb"] = run_id

    @property
    def enabled(self) -> bool:
        return self.live and bool(self.backends) and not self.closed

    def log(self, metrics: Mapping[str, Any], step: int, axis: str) -> int:
        """Log the finite numbers of ``metrics`` (nested mappings flattened to ``a/b``) at ``step`` of ``axis``
        (round | train | online); returns how many were logged."""
        scalars = _scalars(metrics)
        if not self.enabled or not scalars:
            return 0
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()  # a killed run keeps what it logged
        if self._trackio is not None:
            self._trackio.log(scalars, step=step)
        if self._wandb is not None:
            self._wandb.log({**scalars, AXES[axis]: step})
        return len(scalars)

    def log_round(self, t: int, metrics: Mapping[str, Any]) -> int:
        return self.log({"round": metrics}, t, "round")

    def log_train(self, row: Mapping[str, Any]) -> int:
        """One optimizer step's row of ``train_log.jsonl``, at global step ``train_offset + row['step']``."""
        rest = {k: v for k, v in row.items() if k != "step"}
        return self.log({"train": rest}, self.train_offset + int(row["step"]), "train")

    def log_online(self, row: Mapping[str, Any]) -> int:
        rest = {k: v for k, v in row.items() if k != "step"}
        return self.log({"online": rest}, int(row["step"]), "online")

    def close(self) -> None:
        global _active
        if self.closed:
            return
        self.closed = True
        if self._tb is not None:
            self._tb.close()
        if self._trackio is not None:
            self._trackio.finish()
        if self._wandb is not None:
            self._wandb.finish()
        if _active is self:
            _active = None


def active_tracker() -> Tracker | None:
    """The tracker of the evarl run in progress in this process (the training engine logs its steps to it)."""
    return _active if _active is not None and _active.enabled else None


def open_run_tracker(cfg: Any, run: Any, is_main: bool = True) -> Tracker:
    """The tracker of run ``run`` (an ``evarl.runs.Run``) for config ``cfg``, made the active one.

    Every process gets one (only process 0's is live), so the loops can call it the same way on all.
    A new run's identities go to the manifest (``tracking``); a resumed run's are read back from it.
    """
    global _active
    if _active is not None:
        _active.close()
    tc = cfg.tracking
    backends = requested_backends(tc.backends, cfg.solver.log_to)
    entry = run.manifest.get("tracking") or {}
    ids = entry.get("ids", {}) if isinstance(entry, dict) else {}
    tracker = Tracker(
        backends,
        run.dir,
        tc.project,
        tc.run_name or cfg.name,
        ids,
        {
            **(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}),
            "config_fingerprint": run.manifest.get("config_fingerprint"),
            "run_dir": str(run.dir),
        },
        live=is_main,
    )
    if is_main:
        note = legacy_note(cfg.solver.log_to)
        if note:
            print(f"[evarl] note: {note}", flush=True)
    run.set("tracking", {"backends": backends, "ids": tracker.ids if is_main else ids})
    _active = tracker
    atexit.register(tracker.close)
    return tracker


# ---------------------------------------------------------------- what a round logs


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def heldout_metrics(eval_json: Path) -> dict[str, Any]:
    """The held-out numbers of an ``eval.json``: mean reward with n and a 95% interval, failed, length, IFEval."""
    if not eval_json.exists():
        return {}
    h = json.loads(eval_json.read_text(encoding="utf-8")).get("heldout") or {}
    out: dict[str, Any] = {k: h.get(k) for k in ("mean_reward", "n", "failed", "mean_length", "truncated")}
    n, mean, sd = h.get("n"), h.get("mean_reward"), h.get("reward_std")
    if isinstance(n, int) and n > 1 and isinstance(mean, int | float) and isinstance(sd, int | float):
        half = Z95 * sd * math.sqrt(n / (n - 1)) / math.sqrt(n)  # reward_std is the population std
        out.update(mean_reward_ci_low=mean - half, mean_reward_ci_high=mean + half)
    ife = h.get("ifeval") or {}
    out["ifeval"] = {
        k: ife.get(k)
        for k in ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose", "n_prompts", "n_instructions")
    }
    return out


def round_metrics(run_dir: Path, stages: Mapping[str, Any], t: int) -> dict[str, Any]:
    """What round ``t`` of an offline run logs (see the module doc), from its files and manifest counts."""
    key = f"round-{t:03d}"
    rd = Path(run_dir) / key

    def counts(stage: str) -> dict[str, Any]:
        return dict((stages.get(f"{key}/{stage}") or {}).get("counts") or {})

    out: dict[str, Any] = {"heldout": heldout_metrics(rd / "eval.json")}
    if t == 0:
        return out
    info = [float(r["value"]) for r in _read_jsonl(rd / "info.jsonl") if r.get("value") is not None]
    evolve = counts("evolve")
    dropped = evolve.get("dropped")
    out["creator"] = {
        "informativeness": mean_interval(info),
        "sampled": counts("sample").get("sampled"),
        "evolved_children": evolve.get("children"),
        "evolved_kept": evolve.get("kept"),
        "evolved_dropped": sum(dropped.values()) if isinstance(dropped, dict) else dropped,
        "prompts": counts("mix").get("prompts"),
        "evolved_in_prompts": counts("mix").get("evolved"),
    }
    rewards = [
        float(r["reward"]) for r in _read_jsonl(rd / "train_scores.jsonl") if r.get("reward") is not None
    ]
    out["reward"] = {**mean_interval(rewards), "failed": counts("train_score").get("failed")}
    out["pairs"] = counts("pairs")
    train = counts("train")
    out["train"] = {k: v for k, v in train.items() if k not in ("epochs", "processes", "resumed_from_step")}
    return out


def track_round(run: Any, tracker: Tracker, t: int) -> None:
    """The ``round-00t/track`` stage of run ``run`` (an ``evarl.runs.Run``): round t's numbers to the tracker,
    once (a resumed run skips rounds already logged). Called on every process when the run has backends."""
    if tracker.backends:
        run.stage(
            f"round-{t:03d}/track",
            lambda: {"logged": tracker.log_round(t, round_metrics(run.dir, run.manifest["stages"], t))},
        )


def train_steps_before(stages: Mapping[str, Any], t: int) -> int:
    """Optimizer steps of rounds 1..t-1 (the global step offset of round t's training)."""
    total = 0
    for k in range(1, t):
        steps = ((stages.get(f"round-{k:03d}/train") or {}).get("counts") or {}).get("steps")
        total += int(steps) if isinstance(steps, int) else 0
    return total
