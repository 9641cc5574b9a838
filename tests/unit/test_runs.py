"""Run-directory integrity (evarl.runs): output digests, verified stages on reopen, the lock, name containment,
fingerprints that ignore how a path was spelled, and a refused rerun that names the differing fields."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evarl import runs
from evarl.config import ConfigError, load_config, validate_config
from evarl.runs import (
    MANIFEST_FORMAT,
    NotARunError,
    Run,
    RunChangedError,
    RunExistsError,
    RunLock,
    RunLockedError,
    config_fingerprint,
    legacy_digest,
    legacy_fingerprint,
    normalized_config,
    output_digest,
)


def _cfg(tmp: Path, *over: str, name: str = "r"):
    return load_config(None, [f"output_dir={tmp / 'runs'}", f"name={name}", *over])


def _write(p: Path, text: str) -> dict[str, int]:
    p.write_text(text)
    return {"lines": text.count("\n")}


def _three_stages(run: Run, calls: list[str]) -> None:
    """generate -> score -> pairs, each a real file in the run directory; `calls` records what ran."""
    d = run.dir

    def stage(key: str, name: str, text: str) -> None:
        def fn() -> dict[str, int]:
            calls.append(key)
            return _write(d / name, text)

        run.stage(key, fn, [d / name])

    stage("round-001/generate", "generations.jsonl", '{"g": 1}\n')
    stage("round-001/score", "scores.jsonl", '{"s": 1}\n')
    stage("round-001/pairs", "pairs.jsonl", '{"p": 1}\n')


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    for key in list(RunLock.held):
        RunLock.release(Path(key))


# ---------------------------------------------------------------- digests


def test_small_file_digest_is_a_content_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n')
    shutil.copy(a, b)
    os.utime(b, (1, 1))  # another mtime: a copy of the same bytes is the same output
    assert output_digest(a) == output_digest(b)
    assert output_digest(a).startswith("sha256:")
    b.write_text('{"x": 2}\n')
    assert output_digest(a) != output_digest(b)
    assert output_digest(tmp_path / "missing") is None


def test_large_file_digest_samples_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "FULL_HASH_MAX_BYTES", 4096)
    monkeypatch.setattr(runs, "SAMPLE_BYTES", 256)
    big = tmp_path / "w.safetensors"
    data = bytearray(os.urandom(64 * 1024))
    big.write_bytes(bytes(data))
    d0 = output_digest(big)
    assert d0.startswith("sampled:")
    copy = tmp_path / "copy.safetensors"
    shutil.copy(big, copy)
    os.utime(copy, (5, 5))
    assert output_digest(copy) == d0  # copying (new mtime) does not count as a change
    data[10] ^= 0xFF  # first block
    big.write_bytes(bytes(data))
    assert output_digest(big) != d0
    big.write_bytes(bytes(data) + b"\0")  # size
    assert output_digest(big) != d0


def test_directory_digest_covers_names_and_contents(tmp_path: Path) -> None:
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / "model.safetensors").write_bytes(b"weights")
    d0 = output_digest(m)
    assert d0.startswith("dir:")
    (m / "model.safetensors").write_bytes(b"weightz")
    d1 = output_digest(m)
    assert d1 != d0
    (m / "model.safetensors").rename(m / "other.safetensors")
    assert output_digest(m) not in (d0, d1)


# ---------------------------------------------------------------- verified stages


def test_deleted_scores_of_a_finished_stage_is_redone_with_every_later_stage(tmp_path: Path) -> None:
    """Data-loss case: a deleted scores.jsonl of a finished stage used to go unnoticed (the stage stayed done)."""
    calls: list[str] = []
    cfg = _cfg(tmp_path)
    _three_stages(Run(cfg).open(), calls)
    assert calls == ["round-001/generate", "round-001/score", "round-001/pairs"]
    rd = cfg.run_dir
    (rd / "scores.jsonl").unlink()
    calls.clear()
    run = Run(cfg).open()
    m = json.loads((rd / "manifest.json").read_text())
    assert m["stages"]["round-001/generate"]["status"] == "done"
    assert m["stages"]["round-001/score"]["status"] == "redo"
    assert m["stages"]["round-001/pairs"]["status"] == "redo"
    assert "scores.jsonl was missing" in m["stages"]["round-001/pairs"]["redo_reason"]
    _three_stages(run, calls)
    assert calls == ["round-001/score", "round-001/pairs"]  # the untouched earlier stage is kept
    assert (rd / "scores.jsonl").exists()
    m = json.loads((rd / "manifest.json").read_text())
    assert all(v["status"] == "done" and "redo_reason" not in v for v in m["stages"].values())


def test_a_later_stage_sent_back_to_redo_starts_without_its_old_outputs(tmp_path: Path) -> None:
    """A redone stage cannot reuse what it made of older inputs (the trainer skips a finished `train/model`):
    its recorded outputs, a file and a model folder, are gone when its function starts; nothing else is."""
    cfg = _cfg(tmp_path)
    run = Run(cfg).open()
    d = run.dir
    model = d / "train" / "model"

    def train() -> dict[str, int]:
        model.mkdir(parents=True, exist_ok=True)
        (model / "weights.bin").write_bytes(b"w")
        return {}

    run.stage("round-001/pairs", lambda: _write(d / "pairs.jsonl", '{"p": 1}\n'), [d / "pairs.jsonl"])
    run.stage("round-001/train", train, [model])
    _write(d / "train" / "train_log.jsonl", "{}\n")  # not a recorded output: left alone
    (d / "pairs.jsonl").unlink()

    run = Run(cfg).open()
    seen: dict[str, bool] = {}

    def pairs_again() -> dict[str, int]:
        seen["model_during_pairs"] = model.exists()  # the later stage's outputs are not touched yet
        return _write(d / "pairs.jsonl", '{"p": 2}\n')

    def train_again() -> dict[str, int]:
        seen["model_during_train"] = model.exists()
        return train()

    run.stage("round-001/pairs", pairs_again, [d / "pairs.jsonl"])
    run.stage("round-001/train", train_again, [model])
    assert seen == {"model_during_pairs": True, "model_during_train": False}
    assert (d / "train" / "train_log.jsonl").exists()
    m = json.loads((d / "manifest.json").read_text())
    assert m["stages"]["round-001/train"]["status"] == "done"
    assert list(m["stages"]["round-001/train"]["outputs"]) == ["train/model"]


def test_changed_output_stops_the_run_and_changes_nothing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _three_stages(Run(cfg).open(), [])
    rd = cfg.run_dir
    (rd / "scores.jsonl").write_text('{"s": 2}\n')  # edited by hand
    (rd / "pairs.jsonl").unlink()  # a later missing output does not hide the change
    before = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()}
    RunLock.release(rd)
    with pytest.raises(RunChangedError) as e:
        Run(cfg).open()
    assert str(rd / "scores.jsonl") in str(e.value) and "round-001/score" in str(e.value)
    assert {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()} == before


def test_legacy_manifest_is_adopted_verified_and_upgraded(tmp_path: Path) -> None:
    """A manifest written before the format marker (16-hex whole-content hashes, the old fingerprint)."""
    cfg = _cfg(tmp_path)
    rd = cfg.run_dir
    rd.mkdir(parents=True)
    (rd / "seed_prompts.jsonl").write_text('{"id": "a", "prompt": "hi"}\n')
    legacy = {
        "stages": {
            "seed": {
                "status": "done",
                "outputs": {"seed_prompts.jsonl": legacy_digest(rd / "seed_prompts.jsonl")},
            }
        },
        "config_fingerprint": legacy_fingerprint(cfg),
    }
    (rd / "manifest.json").write_text(json.dumps(legacy))
    run = Run(cfg).open()
    assert run.done("seed")
    m = json.loads((rd / "manifest.json").read_text())
    assert m["format"] == MANIFEST_FORMAT and m["config_fingerprint"] == config_fingerprint(cfg)
    assert m["stages"]["seed"]["outputs"]["seed_prompts.jsonl"].startswith("sha256:")
    # and a changed file under a legacy hash is caught too
    RunLock.release(rd)
    legacy["stages"]["seed"]["outputs"]["seed_prompts.jsonl"] = "0123456789abcdef"
    (rd / "manifest.json").write_text(json.dumps(legacy))
    with pytest.raises(RunChangedError, match="seed_prompts.jsonl"):
        Run(cfg).open()


def test_require_names_an_output_that_vanished(tmp_path: Path) -> None:
    run = Run(_cfg(tmp_path)).open()
    with pytest.raises(
        RunChangedError, match="round-002/train/model: missing although stage round-002/train"
    ):
        run.require(run.dir / "round-002" / "train" / "model", "round-002/train")


# ---------------------------------------------------------------- the lock

HOLDER = """
import sys, time
from evarl.config import load_config
from evarl.runs import Run
Run(load_config(None, [f"output_dir={sys.argv[1]}", "name=r"])).open()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        cfg = _cfg(tmp_path)
        before = (cfg.run_dir / "manifest.json").read_bytes()
        with pytest.raises(RunLockedError, match=f"process {holder.pid} is using this run directory"):
            Run(cfg).open()
        assert (cfg.run_dir / "manifest.json").read_bytes() == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    Run(_cfg(tmp_path)).open()  # the kernel released the dead holder's lock


def test_the_same_process_may_reopen_its_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    Run(cfg).open()
    Run(cfg).open()  # e.g. an in-process rerun: this process already holds the lock


# ---------------------------------------------------------------- containment and adoption


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "   ", "a\\b", "/etc"])
def test_name_must_stay_inside_output_dir(tmp_path: Path, name: str) -> None:
    cfg = _cfg(tmp_path)
    cfg.name = name  # as a YAML file or an override spells it
    errors = validate_config(cfg)
    assert any(e.startswith("name: must be a plain folder name inside output_dir") for e in errors), errors


@pytest.mark.parametrize("name", ["..", "."])
def test_run_refuses_a_name_leaving_output_dir_even_unvalidated(tmp_path: Path, name: str) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match="name: must be a plain folder name"):
        Run(_cfg(tmp_path, name=name)).open()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["runs"]


LOCKLESS = "notes.txt"


def test_only_evarl_directories_are_adopted(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / LOCKLESS).write_text("mine")
    with pytest.raises(NotARunError, match="not an evarl run directory"):
        Run(cfg).open()
    assert sorted(p.name for p in cfg.run_dir.iterdir()) == [LOCKLESS]
    (cfg.run_dir / LOCKLESS).unlink()
    Run(cfg).open()  # an empty directory is fine
    assert json.loads((cfg.run_dir / "manifest.json").read_text())["format"] == MANIFEST_FORMAT


# ---------------------------------------------------------------- fingerprint and differences


def test_fingerprint_ignores_path_spelling_but_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "data" / "y.jsonl").write_text('{"prompt": "ho"}\n')
    spellings = ["./data/x.jsonl", "data/x.jsonl", str(tmp_path / "data" / "x.jsonl"), "data/../data/x.jsonl"]
    fps = {
        config_fingerprint(
            _cfg(
                tmp_path,
                "task.name=file",
                f"task.train_file={s}",
                "reward.sources=[{name: classifier, model: ./data}]",
            )
        )
        for s in spellings
    }
    assert len(fps) == 1
    other = _cfg(
        tmp_path,
        "task.name=file",
        "task.train_file=data/y.jsonl",
        "reward.sources=[{name: classifier, model: ./data}]",
    )
    assert config_fingerprint(other) not in fps
    lists = {config_fingerprint(_cfg(tmp_path, f"solver.sft_data=[{s}]")) for s in spellings}
    assert len(lists) == 1  # a list of paths too
    # a hub id keeps its meaning; the run's location and the resumable fields do not count
    hub = normalized_config(_cfg(tmp_path, "model.path=HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert hub["model"]["path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert normalized_config(_cfg(tmp_path, "reward.sources=[{name: classifier, model: ./data}]"))["reward"][
        "sources"
    ][0]["model"] == str(tmp_path / "data")
    assert config_fingerprint(
        _cfg(tmp_path, "rounds=5", "threads=2", name="elsewhere")
    ) == config_fingerprint(_cfg(tmp_path))


def test_refused_rerun_names_the_fields_that_differ(tmp_path: Path) -> None:
    Run(_cfg(tmp_path, "solver.beta=0.1", "generation.n=4")).open()
    RunLock.release(tmp_path / "runs" / "r")
    with pytest.raises(RunExistsError) as e:
        Run(_cfg(tmp_path, "solver.beta=0.5", "generation.n=4")).open()
    msg = str(e.value)
    assert "was started with a different config" in msg and "solver.beta: 0.1 -> 0.5" in msg
    assert "generation.n" not in msg


def test_refused_legacy_rerun_diffs_against_config_yaml(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "solver.beta=0.1")
    run = Run(cfg).open()
    m = json.loads(run.manifest_path.read_text())
    del m["config"], m["format"]
    m["config_fingerprint"] = legacy_fingerprint(cfg)
    run.manifest_path.write_text(json.dumps(m))
    RunLock.release(run.dir)
    with pytest.raises(RunExistsError, match=r"solver\.beta: 0\.1 -> 0\.2"):
        Run(_cfg(tmp_path, "solver.beta=0.2")).open()


def test_a_field_added_later_at_its_default_does_not_refuse_the_run(tmp_path: Path) -> None:
    """A newer evarl adds a config field: a run made before it (the field absent) continues while the field is
    at its default, and is refused, naming it, once it is set."""
    run = Run(_cfg(tmp_path)).open()
    m = json.loads(run.manifest_path.read_text())
    del m["config"]["solver"]["beta"]
    m["config_fingerprint"] = "0" * 16  # as fingerprinted by the older version
    run.manifest_path.write_text(json.dumps(m))
    Run(_cfg(tmp_path)).open()
    assert json.loads(run.manifest_path.read_text())["config_fingerprint"] == config_fingerprint(
        _cfg(tmp_path)
    )
    run.manifest_path.write_text(json.dumps(m))  # the older run again
    with pytest.raises(RunExistsError, match=r'solver\.beta: "\(unset\)" -> 0\.5'):
        Run(_cfg(tmp_path, "solver.beta=0.5")).open()
