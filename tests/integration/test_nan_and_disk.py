"""Training that diverges and a disk that fills up, on a real tiny Llama (SmolLM2's tokenizer) through
`evarl sft` (the shared training engine):

- a learning rate of 1e30 makes step 2 non-finite: training stops with one line (exit 2) naming the step and the
  last good checkpoint, which is left as it was (finite weights), and no final model is written;
- a checkpoint write that meets a file-size limit (RLIMIT_FSIZE in a child process, SIGXFSZ ignored so the write
  raises OSError(EFBIG)) is reported in one line (exit 2) naming the checkpoint; the previous checkpoint is
  intact byte for byte, and a rerun without the limit resumes from it and finishes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evarl.cli import main
from evarl.engine import FAIL_ENV, check_finite_step
from evarl.errors import TrainingDiverged


def _data(tmp: Path, n: int = 4) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"Say the number {i}."},
                      {"role": "assistant", "content": f"The number is {i}."}]}
        for i in range(n)
    ]  # fmt: skip
    p = tmp / "sft.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _args(model: Path, data: Path, out: Path, lr: str = "1e-4") -> list[str]:
    return ["sft", "--model", str(model), "--data", str(data), "--out", str(out), "--epochs", "1",
            "--lr", lr, "--save-every", "1", "--batch-size", "1", "--grad-accum", "1", "--warmup-ratio", "0",
            "--scheduler", "constant", "--max-length", "64", "--max-prompt-length", "32", "--device", "cpu",
            "--quiet"]  # fmt: skip


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_check_finite_step_messages(tmp_path: Path) -> None:
    check_finite_step(1.5, {"grad_norm": 2.0}, 3, "train x", tmp_path)  # finite: nothing happens
    check_finite_step(
        2.0, {"grad_norm": math.inf, "skipped": 1}, 3, "train rm", tmp_path, skip_nonfinite=True
    )
    with pytest.raises(
        TrainingDiverged, match=r"train x: the training loss became nan at optimizer step 3.*no "
    ):
        check_finite_step(float("nan"), {}, 3, "train x", tmp_path)
    with pytest.raises(TrainingDiverged, match="gradient norm became inf"):
        check_finite_step(1.0, {"grad_norm": math.inf, "skipped": 1}, 4, "train x", tmp_path)


def test_nan_stops_training_and_keeps_the_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from safetensors.torch import load_file

    data = _data(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("a file of the user's")
    before = _hashes(tmp_path)
    assert main(_args(tiny_model_dir, data, out, lr="1e30")) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("evarl:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "train sft:" in lines[0] and "at optimizer step 2" in lines[0]
    assert ("loss became" in lines[0] or "gradient norm became" in lines[0]) and "step-0000001" in lines[0]
    state = out / "state"
    assert (state / "latest").read_text() == "step-0000001"
    weights = load_file(str(state / "step-0000001" / "trainable.safetensors"))
    assert weights and all(bool(t.isfinite().all()) for t in weights.values())  # a good checkpoint
    assert not (out / "model").exists()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1] and math.isfinite(log[0]["loss"])
    after = _hashes(tmp_path)
    assert {k: after[k] for k in before} == before  # the user's files are untouched


def _limited(limit: int) -> list[str]:
    """A Python command line that caps the size of any file it writes at ``limit`` bytes, then runs `evarl`.
    SIGXFSZ is ignored, so a write past the limit raises OSError(EFBIG) instead of killing the process."""
    code = (
        "import resource, runpy, signal, sys; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv = ['evarl', *sys.argv[1:]]; "
        "runpy.run_module('evarl.cli', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def test_full_disk_keeps_the_checkpoint_and_a_rerun_finishes(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    data = _data(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv(
        "EVARL_CACHE", str(tmp_path / "cache")
    )  # where the simulated kill leaves its traceback
    monkeypatch.setenv(FAIL_ENV, "1")
    assert main(_args(tiny_model_dir, data, out)) == 1  # killed right after the step-1 checkpoint
    monkeypatch.delenv(FAIL_ENV)
    capsys.readouterr()
    state = out / "state"
    assert (state / "latest").read_text() == "step-0000001"
    before = _hashes(state)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 4 MiB: the JSONL log and metadata fit, the 13 MB weights of the step-2 checkpoint do not
    proc = subprocess.run(
        [*_limited(4 << 20), *_args(tiny_model_dir, data, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    err = [x for x in proc.stderr.splitlines() if x.startswith("evarl:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert "step-0000002" in err[0] and "File too large" in err[0] and "rerun" in err[0]
    assert _hashes(state) == before  # the previous checkpoint, byte for byte; no partial directory left
    assert not (out / "model").exists()

    assert main(_args(tiny_model_dir, data, out)) == 0  # no limit: resumes from step 1 and finishes
    summary = json.loads((out / "model" / "evarl_train_summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["steps"] == 4
    assert not state.exists()
