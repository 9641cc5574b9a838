"""Bad input stops with one clear message naming the file, line or field, and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.cli import main


def _run(args: list[str], capsys) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


def test_unknown_config_key(capsys) -> None:
    rc, err = _run(["run", "solver.betta=0.1"], capsys)
    assert rc == 2 and "solver.betta: unknown key" in err


def test_missing_model_path(tmp_path: Path, capsys) -> None:
    rc, err = _run(["validate", f"model.path={tmp_path / 'nope'}"], capsys)
    assert rc == 2 and "model.path" in err and "does not exist" in err
    rc, err = _run(["run", f"model.path={tmp_path / 'nope'}", f"output_dir={tmp_path}"], capsys)
    assert rc == 2 and "does not exist" in err
    assert not (tmp_path / "default").exists()  # rejected before anything was created


@pytest.mark.parametrize(
    "lines,expect",
    [
        ([json.dumps({"prompt": "fine"}), "{broken"], "train.jsonl:2: not valid JSON"),
        (
            [json.dumps({"prompt": "fine"}), json.dumps({"prompt": ""})],
            "train.jsonl:2: field 'prompt': empty prompt",
        ),
    ],
)
def test_bad_prompt_file_names_line_and_is_refused_before_the_run(
    tmp_path: Path, tiny_model_dir: Path, capsys, lines, expect
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    args = [
        "run",
        "task.name=file",
        f"task.train_file={data}",
        f"model.path={tiny_model_dir}",
        f"output_dir={tmp_path}",
        "name=r",
    ]
    rc, err = _run(args, capsys)
    assert rc == 2 and expect in err and "task.train_file" in err
    # the prompt file is read by validation, before any model loads or the run directory exists
    assert not (tmp_path / "r").exists()


def test_changed_config_on_existing_run_is_refused(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from evarl.config import load_config
    from evarl.runs import Run

    cfg = load_config(None, [f"output_dir={tmp_path}", "name=r", f"model.path={tiny_model_dir}"])
    run = Run(cfg).open()
    run.stage("seed", lambda: {"ok": 1})
    before = (tmp_path / "r" / "manifest.json").read_text()
    rc, err = _run(
        ["run", f"output_dir={tmp_path}", "name=r", f"model.path={tiny_model_dir}", "solver.beta=0.5"], capsys
    )
    assert rc == 2 and "different config" in err
    assert (tmp_path / "r" / "manifest.json").read_text() == before


def test_scale_settings_are_checked_before_any_model_loads(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`device: cuda` without CUDA, a process count that cannot split the global batch, remote code not allowed:
    one clear message each, exit 2, nothing created."""
    base = ["run", f"output_dir={tmp_path}", "name=r"]
    rc, err = _run([*base, "device=cuda"], capsys)
    assert rc == 2 and "device: 'cuda' was asked for but this machine has no CUDA device" in err
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun --nproc_per_node 3 sets it
    rc, err = _run([*base, "solver.batch_size=2", "solver.global_batch_size=8"], capsys)
    assert (
        rc == 2
        and "solver.global_batch_size: 8 pairs per step cannot be split" in err
        and "x 3 processes" in err
    )
    monkeypatch.delenv("WORLD_SIZE")
    rm = tmp_path / "armo"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {
        "AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"}}))  # fmt: skip
    rc, err = _run([*base, "reward.sources=[{name: classifier, model: " + str(rm) + "}]"], capsys)
    assert rc == 2 and "reward.sources[0].trust_remote_code: true" in err
    assert not (tmp_path / "r").exists()
