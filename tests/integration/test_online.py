"""Online eva on a real (tiny random) Llama: the three buffer phases, RLOO and online DPO, and SIGKILL resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evarl.config import load_config
from evarl.online import run_online


def _args(tmp: Path, model: Path, name: str, solver: str = "rloo") -> list[str]:
    return [
        "algorithm=online",
        f"model.path={model}",
        f"output_dir={tmp}",
        f"name={name}",
        "seed=2",
        "threads=1",
        "task.train_prompts=12",
        "task.heldout_prompts=2",
        "generation.n=3",
        "generation.temperature=1.0",
        "generation.max_new_tokens=8",
        "creator.max_new_tokens=12",
        "online.steps=5",
        "online.batch_prompts=4",
        "online.buffer_size=6",
        "online.save_every=1",
        "online.learning_rate=1e-3",
        f"online.solver={solver}",
        "reward.length_penalty=0.01",
        "solver.max_length=128",
        "solver.max_prompt_length=64",
        "eval.max_new_tokens=6",
    ]


@pytest.mark.parametrize("solver", ["rloo", "online_dpo"])
def test_online_phases_and_training(tmp_path: Path, tiny_model_dir: Path, solver: str) -> None:
    summary = run_online(load_config(None, _args(tmp_path, tiny_model_dir, solver, solver)), progress=False)
    steps = [json.loads(x) for x in (tmp_path / solver / "online" / "steps.jsonl").read_text().splitlines()]
    phases = [s["phase"] for s in steps]
    order = {"warmup": 0, "mixup": 1, "bootstrap": 2}
    assert phases[0] == "warmup" and phases[-1] == "bootstrap" and "mixup" in phases
    assert [order[p] for p in phases] == sorted(order[p] for p in phases)  # warm-up -> mix-up -> bootstrap
    assert all(s["from_buffer"] == 0 for s in steps if s["phase"] == "warmup")
    assert all(s["from_buffer"] == 2 for s in steps if s["phase"] == "mixup")
    assert steps[-1]["from_dataset"] == 0 and steps[-1]["from_buffer"] > 0
    assert all("loss" in s for s in steps)  # the length penalty breaks ties, so every step trains
    assert all(s["buffer"] <= 6 for s in steps)
    evolved = [
        json.loads(x) for x in (tmp_path / solver / "online" / "evolved.jsonl").read_text().splitlines()
    ]
    assert evolved and all(e["parent_id"] and e["method"] for e in evolved)
    assert summary["final_heldout"]["n"] == 2
    assert (tmp_path / solver / "online" / "model" / "model.safetensors").exists()


def test_online_sigkill_resume_is_exact(tmp_path: Path, tiny_model_dir: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def cmd(name: str) -> list[str]:
        return [sys.executable, "-m", "evarl.cli", "run", *_args(tmp_path, tiny_model_dir, name), "--quiet"]

    assert subprocess.run(cmd("ref"), env=env, capture_output=True).returncode == 0
    proc = subprocess.Popen(cmd("k"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "k" / "online" / "state" / "latest"  # the engine's commit pointer
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 300:
        meta = latest.parent / latest.read_text().strip() / "meta.json" if latest.exists() else None
        if meta is not None and meta.exists() and json.loads(meta.read_text())["step"] >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert not (tmp_path / "k" / "online" / "model").exists(), "finished before the kill"
    assert subprocess.run(cmd("k"), env=env, capture_output=True).returncode == 0
    for rel in (
        "online/steps.jsonl",
        "online/evolved.jsonl",
        "online/model/model.safetensors",
        "online/eval.json",
    ):
        assert (tmp_path / "ref" / rel).read_bytes() == (tmp_path / "k" / rel).read_bytes(), rel
