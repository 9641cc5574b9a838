"""The walking skeleton end to end on a real (tiny random) Llama with SmolLM2's tokenizer.

A run is SIGKILLed in the middle of a stage (twice: during generation and during training); the rerun completes
and its artifacts are byte-identical to an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def _config(tmp: Path, model: Path, name: str) -> Path:
    cfg = {
        "name": name,
        "output_dir": str(tmp / "runs"),
        "seed": 3,
        "rounds": 2,
        "threads": 1,
        "model": {"path": str(model)},
        "generation": {"n": 3, "max_new_tokens": 10, "temperature": 1.0, "batch_size": 24},
        "task": {"train_prompts": 24, "heldout_prompts": 4},
        "creator": {"methods": ["evolinstruct", "constraint"], "num_evolutions": 2, "max_new_tokens": 16},
        "solver": {
            "batch_size": 2,
            "epochs": 2,
            "save_every": 1,
            "max_length": 160,
            "max_prompt_length": 96,
            "learning_rate": 1e-3,
        },
        "eval": {"max_new_tokens": 8},
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "evarl.cli", "run", str(cfg), "--quiet"]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run_and_kill_when(cfg: Path, tmp: Path, target: Path, timeout: float = 300) -> bool:
    """Start a run, SIGKILL it as soon as `target` exists. True if it was killed before finishing."""
    proc = subprocess.Popen(_cmd(cfg), env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if target.exists():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.wait()
    return False


def _artifacts(run_dir: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(run_dir.rglob("*")):
        rel = str(p.relative_to(run_dir))
        if not p.is_file() or rel in ("manifest.json", "summary.json") or "/train/state" in "/" + rel:
            continue
        if p.name == "train_log.jsonl":  # wall-clock fields differ; the numbers must not
            rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
            out[rel] = json.dumps(
                [{k: v for k, v in r.items() if "time" not in k and "second" not in k} for r in rows]
            ).encode()
            continue
        if (
            rel.startswith(("plots/", "tensorboard/"))  # tracker event files carry wall-clock times
            or p.name in ("report.md", "report.html", "report.json")
            or p.name.endswith(".partial.jsonl")
        ):
            continue
        if (
            p.name == "evarl_train_summary.json"
        ):  # timings and where it resumed from differ; the rest must not
            d = json.loads(p.read_text())
            volatile = ("second", "time", "resumed")
            out[rel] = json.dumps(
                {k: v for k, v in d.items() if not any(w in k for w in volatile)}, sort_keys=True
            ).encode()
            continue
        if p.name == "config.yaml":  # the two runs differ only by name
            out[rel] = json.dumps(
                {k: v for k, v in yaml.safe_load(p.read_text()).items() if k != "name"}
            ).encode()
            continue
        out[rel] = p.read_bytes()
    return out


def test_sigkill_mid_stage_then_resume_equals_uninterrupted(tmp_path: Path, tiny_model_dir: Path) -> None:
    ref_cfg = _config(tmp_path, tiny_model_dir, "ref")
    res = subprocess.run(_cmd(ref_cfg), env=_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "evarl run finished" in res.stdout

    cfg = _config(tmp_path, tiny_model_dir, "killed")
    run_dir = tmp_path / "runs" / "killed"
    # 1) kill in the middle of the solver's generation stage of round 1
    killed = _run_and_kill_when(cfg, tmp_path, run_dir / "round-001" / "train_generations.partial.jsonl")
    assert killed, "the run finished before it could be killed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["round-001/train_generate"]["status"] == "running"
    # 2) kill in the middle of training of round 2 (after a resumable checkpoint was written)
    killed = _run_and_kill_when(cfg, tmp_path, run_dir / "round-002" / "train" / "state")
    assert killed, "the run finished before it could be killed"
    assert not (run_dir / "round-002" / "train" / "model").exists()
    # 3) finish
    res = subprocess.run(_cmd(cfg), env=_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]

    a, b = _artifacts(tmp_path / "runs" / "ref"), _artifacts(run_dir)
    assert set(a) == set(b)
    different = [k for k in a if a[k] != b[k]]
    assert not different, different
    # every stage finished exactly once in the resumed run's manifest
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(v["status"] == "done" for v in manifest["stages"].values())
    ev = json.loads((run_dir / "round-002" / "eval.json").read_text())
    assert "mean_reward" in ev["heldout"]
