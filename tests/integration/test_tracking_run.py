"""One tracker run per evarl run, read back from the trackers' own files.

A tiny default-like run (the default task on a tiny random Llama with SmolLM2's tokenizer) logs to TensorBoard
and trackio (local store, offline). It runs one round, then is resumed with `rounds=2`: the resumed invocation
must continue the same tracker run. The per-round held-out numbers are read back with TensorBoard's
EventAccumulator and trackio's local SQLite store and compared with the run's eval.json files; each tracker holds
exactly one run, and the training steps form one global step axis over both rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("tensorboard")
pytest.importorskip("trackio")

PROJECT = "evarl-tracking-test"


def _config(tmp: Path, model: Path) -> Path:
    cfg = {
        "name": "tracked",
        "output_dir": str(tmp / "runs"),
        "seed": 5,
        "rounds": 1,
        "threads": 1,
        "model": {"path": str(model)},
        "generation": {"n": 2, "max_new_tokens": 8, "temperature": 1.0, "batch_size": 16},
        "task": {"train_prompts": 8, "heldout_prompts": 3},
        # the default verifier, plus a tiny length term so the random model's responses are never all tied
        "reward": {"sources": [{"name": "verifier"}, {"name": "length", "weight": 0.001}]},
        "creator": {"methods": ["constraint"], "num_evolutions": 2},
        "solver": {
            "batch_size": 2,
            "epochs": 1,
            "max_length": 160,
            "max_prompt_length": 120,
            "learning_rate": 1e-3,
        },
        "eval": {"max_new_tokens": 6},
        "tracking": {"backends": ["tensorboard", "trackio"], "project": PROJECT},
    }
    p = tmp / "tracked.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TRACKIO_DIR=str(tmp / "trackio"), TOKENIZERS_PARALLELISM="false")
    return env


def _run(cfg: Path, tmp: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "evarl.cli", "run", str(cfg), *overrides, "--quiet"]
    proc = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _trackio_logs(tmp: Path, run_name: str) -> dict:
    """Runs and logs of the project from trackio's local store (TRACKIO_DIR is read when trackio is imported)."""
    code = (
        "import json, sys\n"
        "from trackio.sqlite_storage import SQLiteStorage as S\n"
        f"runs = S.get_run_records({PROJECT!r})\n"
        f"logs = S.get_logs({PROJECT!r}, {run_name!r})\n"
        "json.dump({'runs': runs, 'logs': logs}, sys.stdout, default=str)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _heldout(run_dir: Path, t: int) -> float:
    return json.loads((run_dir / f"round-{t:03d}" / "eval.json").read_text())["heldout"]["mean_reward"]


def test_one_tracker_run_across_rounds_and_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    cfg = _config(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "runs" / "tracked"
    _run(cfg, tmp_path)
    first = json.loads((run_dir / "manifest.json").read_text())["tracking"]
    assert first["backends"] == ["tensorboard", "trackio"]
    _run(cfg, tmp_path, "rounds=2")  # resumes: round 1 is skipped, round 2 runs
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tracking"]["ids"] == first["ids"]  # the same tracker run continued
    assert manifest["stages"]["round-001/track"]["counts"]["logged"] > 0

    expected = {t: _heldout(run_dir, t) for t in (0, 1, 2)}
    steps = [
        manifest["stages"][f"round-{t:03d}/train"]["counts"]["steps"] for t in (1, 2)
    ]  # optimizer steps per round

    # TensorBoard: one run (one event directory) under the whole run directory, holding every round
    mux = EventMultiplexer().AddRunsFromDirectory(str(run_dir))
    assert list(mux.Runs()) == ["tensorboard"]
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    held = {e.step: e.value for e in acc.Scalars("round/heldout/mean_reward")}
    assert held == pytest.approx(expected)
    assert acc.Scalars("round/heldout/n")[-1].value == 3
    assert {e.step for e in acc.Scalars("round/pairs/pairs")} == {1, 2}
    info_n = {e.step: e.value for e in acc.Scalars("round/creator/informativeness/n")}
    assert info_n == {1: 8.0, 2: 8.0}  # every prompt of the round's set has an informativeness
    train_steps = [e.step for e in acc.Scalars("train/loss")]
    assert train_steps == list(range(1, sum(steps) + 1))  # one global step axis over both rounds

    # trackio: one run of that name in the project, with the same per-round held-out numbers
    store = _trackio_logs(tmp_path, "tracked")
    assert [r["name"] for r in store["runs"]] == ["tracked"]
    assert first["ids"]["trackio"]["id"] == store["runs"][0]["id"]
    got = {
        r["step"]: r["round/heldout/mean_reward"] for r in store["logs"] if "round/heldout/mean_reward" in r
    }
    assert got == pytest.approx(expected)
    trackio_train = sorted(r["step"] for r in store["logs"] if "train/loss" in r)
    assert trackio_train == train_steps
