"""evarl.tracking: backend checks, what a round logs, one TensorBoard run reopened by id, W&B offline.

Real TensorBoard files are written and read back with EventAccumulator; the run object handed to
`open_run_tracker` is a small fake with the three things it uses (dir, manifest, set, stage).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evarl import tracking
from evarl.config import RunConfig, TrackingConfig, check_config
from evarl.tracking import (
    Tracker,
    active_tracker,
    backend_problems,
    mean_interval,
    open_run_tracker,
    requested_backends,
    round_metrics,
    track_round,
    train_steps_before,
)


def _scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


class FakeRun:
    """What open_run_tracker and track_round use of evarl.runs.Run."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any] | None = None) -> None:
        self.dir = run_dir
        self.manifest = manifest or {"stages": {}, "config_fingerprint": "abc"}

    def set(self, key: str, value: Any) -> None:
        self.manifest[key] = value

    def stage(self, key: str, fn: Any) -> dict:
        if self.manifest["stages"].get(key, {}).get("status") == "done":
            return self.manifest["stages"][key]
        self.manifest["stages"][key] = {"status": "done", "counts": fn()}
        return self.manifest["stages"][key]


def test_requested_backends_add_the_deprecated_log_to_entries() -> None:
    assert requested_backends(["tensorboard"], ["jsonl"]) == ["tensorboard"]
    assert requested_backends(["trackio"], ["jsonl", "tensorboard", "wandb"]) == [
        "trackio",
        "tensorboard",
        "wandb",
    ]
    assert requested_backends(["tensorboard", "tensorboard"], ["tensorboard"]) == ["tensorboard"]
    assert tracking.legacy_note(["jsonl"]) is None
    assert "solver.log_to: tensorboard is deprecated" in tracking.legacy_note(["jsonl", "tensorboard"])


def test_backend_problems_name_the_field_and_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend_problems(["tensorboard"]) == []
    assert backend_problems(["mlflow"]) == [
        "tracking.backends[0]: unknown tracker 'mlflow'; known: tensorboard, trackio, wandb"
    ]
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    (msg,) = backend_problems(["tensorboard", "wandb"])
    assert msg.startswith("tracking.backends[1]: 'wandb' is not installed (pip install 'evarl[wandb]'")


def test_validation_reports_trackers_and_notes_the_deprecated_log_to() -> None:
    _, errors, notes = check_config(None, ["tracking.backends=[tensorboard,mlflow]", "tracking.project=' '"])
    assert "tracking.backends[1]: unknown tracker 'mlflow'; known: tensorboard, trackio, wandb" in errors
    assert "tracking.project: must be a non-empty name" in errors
    if tracking.importlib.util.find_spec("trackio") is not None:  # a project name trackio reserves
        _, errors, _ = check_config(None, ["tracking.backends=[trackio]", "tracking.project=model_system"])
        assert any(
            e.startswith("tracking.project: Project name 'model_system' is not allowed") for e in errors
        )
    _, errors, notes = check_config(None, ["solver.log_to=[jsonl,tensorboard]"])
    assert not [e for e in errors if "log_to" in e or "tracking" in e]
    assert any(n.startswith("solver.log_to: tensorboard is deprecated") for n in notes)
    assert RunConfig().tracking == TrackingConfig(backends=["tensorboard"], project="evarl", run_name=None)


def test_mean_interval() -> None:
    assert mean_interval([]) == {"n": 0}
    assert mean_interval([2.0]) == {"n": 1.0, "mean": 2.0}
    m = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 1.959963984540054 * (1.2909944487358056 / 2.0)  # sample std of 1..4 / sqrt(4)
    assert m["n"] == 4 and m["mean"] == 2.5
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((2.5 - half, 2.5 + half))


def _write_round(run_dir: Path, t: int) -> dict[str, Any]:
    rd = run_dir / f"round-{t:03d}"
    rd.mkdir(parents=True)
    (rd / "eval.json").write_text(
        json.dumps(
            {
                "heldout": {
                    "mean_reward": 0.5,
                    "reward_std": 0.5,
                    "n": 4,
                    "failed": 0,
                    "ifeval": {"prompt_loose": 0.25, "prompt_strict": 0.25, "benchmark": "IFEval"},
                }
            }
        )
    )
    (rd / "info.jsonl").write_text(
        "".join(json.dumps({"prompt_id": str(i), "value": v}) + "\n" for i, v in enumerate([0.0, 1.0]))
    )
    (rd / "train_scores.jsonl").write_text(
        "".join(
            json.dumps({"prompt_id": "0", "index": i, "reward": r}) + "\n"
            for i, r in enumerate([1.0, None, 0.0])
        )
    )
    key = f"round-{t:03d}"
    return {
        f"{key}/sample": {"counts": {"sampled": 1}},
        f"{key}/evolve": {"counts": {"children": 4, "kept": 3, "dropped": {"copy": 1, "empty": 0}}},
        f"{key}/mix": {"counts": {"prompts": 2, "evolved": 1}},
        f"{key}/train_score": {"counts": {"failed": 1}},
        f"{key}/pairs": {"counts": {"pairs": 1, "skipped": {"tie": 1}}},
        f"{key}/train": {"counts": {"steps": 3, "final_loss": 0.6, "epochs": 1}},
    }


def test_round_metrics_from_the_round_files(tmp_path: Path) -> None:
    stages = _write_round(tmp_path, 1)
    m = round_metrics(tmp_path, stages, 1)
    assert m["creator"]["informativeness"]["n"] == 2 and m["creator"]["informativeness"]["mean"] == 0.5
    assert m["creator"]["evolved_dropped"] == 1 and m["creator"]["sampled"] == 1
    assert m["reward"]["n"] == 2 and m["reward"]["failed"] == 1
    assert m["pairs"] == {"pairs": 1, "skipped": {"tie": 1}}
    assert m["train"] == {"steps": 3, "final_loss": 0.6}
    h = m["heldout"]
    half = 1.959963984540054 * 0.5 * (4 / 3) ** 0.5 / 2  # population std 0.5 -> sample std, / sqrt(4)
    assert (h["mean_reward_ci_low"], h["mean_reward_ci_high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert h["ifeval"]["prompt_loose"] == 0.25
    assert set(round_metrics(tmp_path, stages, 0)) == {"heldout"}  # round 0: the base policy, no files
    assert train_steps_before(stages, 1) == 0 and train_steps_before(stages, 2) == 3


def test_tensorboard_run_is_continued_with_a_global_train_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    t1 = Tracker(["tensorboard"], tmp_path, "p", "r")
    assert t1.log_round(1, {"heldout": {"mean_reward": 0.25, "label": "x", "flag": True, "none": None}}) == 1
    t1.log_train({"step": 1, "loss": 0.9, "lr": 1e-3})
    t1.log_train({"step": 2, "loss": 0.7})
    t1.close()
    t2 = Tracker(["tensorboard"], tmp_path, "p", "r", ids=t1.ids)  # a resumed run: same directory
    t2.train_offset = 2
    t2.log_train({"step": 1, "loss": 0.5})
    t2.log_round(2, {"heldout": {"mean_reward": 0.5}})
    t2.close()
    assert t2.log_round(3, {"x": 1.0}) == 0  # closed: nothing more
    assert [p.name for p in tmp_path.iterdir()] == ["tensorboard"]
    s = _scalars(tmp_path / "tensorboard")
    assert s["round/heldout/mean_reward"] == {1: 0.25, 2: 0.5}
    assert s["train/loss"] == pytest.approx({1: 0.9, 2: 0.7, 3: 0.5})
    assert "round/heldout/label" not in s and "round/heldout/flag" not in s


def test_a_process_that_is_not_main_logs_nothing(tmp_path: Path) -> None:
    t = Tracker(["tensorboard"], tmp_path, "p", "r", live=False)
    assert t.log_round(1, {"a": 1.0}) == 0 and not t.enabled
    assert list(tmp_path.iterdir()) == []


def test_open_run_tracker_stores_ids_and_the_engine_sees_it(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = SimpleNamespace(name="demo", tracking=TrackingConfig(), solver=SimpleNamespace(log_to=["jsonl"]))
    run = FakeRun(tmp_path)
    run.manifest["stages"].update(_write_round(tmp_path, 1))
    tr = open_run_tracker(cfg, run)
    try:
        assert active_tracker() is tr
        assert run.manifest["tracking"] == {
            "backends": ["tensorboard"],
            "ids": {"tensorboard": "tensorboard"},
        }
        track_round(run, tr, 1)
        track_round(run, tr, 1)  # a finished track stage is not logged twice
        assert run.manifest["stages"]["round-001/track"]["counts"]["logged"] > 10
    finally:
        tr.close()
    assert active_tracker() is None
    s = _scalars(tmp_path / "tensorboard")
    assert s["round/heldout/mean_reward"] == {1: 0.5}
    assert s["round/creator/informativeness/n"] == {1: 2.0}
    assert len(s["round/pairs/pairs"]) == 1


def test_wandb_offline_run_is_one_run_across_invocations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'evarl[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    t1 = Tracker(["wandb"], tmp_path, "evarl-test", "demo")
    t1.log_round(0, {"heldout": {"mean_reward": 0.1}})
    t1.log_train({"step": 1, "loss": 1.0})
    t1.close()
    t2 = Tracker(["wandb"], tmp_path, "evarl-test", "demo", ids=t1.ids)
    t2.log_round(1, {"heldout": {"mean_reward": 0.2}})
    t2.close()
    assert t2.ids["wandb"] == t1.ids["wandb"]
    runs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert runs and all(
        name.endswith("-" + t1.ids["wandb"]) for name in runs
    )  # one run id, synced per invocation
