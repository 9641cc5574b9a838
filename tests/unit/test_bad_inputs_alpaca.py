"""Bad input for `evarl eval --alpaca-annotator` (AlpacaEval 2.0 judging): each case exits with status 2 before
any model is loaded, prints one `evarl: error:` line naming the culprit (the flag, the annotator, the file and row,
the extra to install), no traceback, and leaves every file that was there unchanged (by hash)."""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import pytest

from evarl.cli import main


def _alpaca_eval_importable() -> bool:
    try:  # installed is not enough: 0.6.6 also needs pkg_resources (setuptools<81)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pkg_resources deprecation warning
            import alpaca_eval  # noqa: F401
    except ImportError:
        return False
    return True


needs_alpaca_eval = pytest.mark.skipif(
    not _alpaca_eval_importable(),
    reason="alpaca-eval is the optional extra evarl[alpaca] (pip install 'evarl[alpaca]')",
)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _files(tmp_path: Path) -> list[str]:
    rows = [{"instruction": f"Name {k} rivers."} for k in (2, 3)]
    (tmp_path / "prompts.json").write_text(json.dumps(rows))
    (tmp_path / "model.json").write_text(json.dumps([{**r, "output": "Nile, Amazon."} for r in rows]))
    (tmp_path / "base.json").write_text(json.dumps([{**r, "output": "Nile."} for r in rows]))
    out = tmp_path / "ev"
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": "result"}\n')  # a previous evaluation's file
    return ["eval", "--format", "alpaca", "--prompts", str(tmp_path / "prompts.json"),
            "--outputs", str(tmp_path / "model.json"), "--baseline-outputs", str(tmp_path / "base.json"),
            "--judge", str(tmp_path / "no-model-needed"), "--out", str(out)]  # fmt: skip


def _refused(args: list[str], root: Path, capsys: pytest.CaptureFixture[str], *culprits: str) -> str:
    before = _snapshot(root)
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("evarl: error:") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for c in culprits:
        assert c in err, (c, err)
    assert _snapshot(root) == before
    return err


@needs_alpaca_eval
def test_unknown_annotator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*_files(tmp_path), "--alpaca-annotator", "weighted_alpaca_eval_gpt5"]
    err = _refused(args, tmp_path, capsys, "--alpaca-annotator", "'weighted_alpaca_eval_gpt5'")
    assert "weighted_alpaca_eval_gpt4_turbo" in err  # the ones that exist are listed


@needs_alpaca_eval
def test_annotator_that_is_not_first_token_logprob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_files(tmp_path), "--alpaca-annotator", "alpaca_eval_gpt4"]
    _refused(args, tmp_path, capsys, "'alpaca_eval_gpt4'", "not a single-token log-prob annotator")


def test_package_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "alpaca_eval", None)  # `import alpaca_eval` fails as when not installed
    args = [*_files(tmp_path), "--alpaca-annotator", "weighted_alpaca_eval_gpt4_turbo"]
    _refused(args, tmp_path, capsys, "--alpaca-annotator", "alpaca-eval", "pip install 'evarl[alpaca]'")


@needs_alpaca_eval
def test_alpaca_eval_set_row_without_instruction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    aset = tmp_path / "alpaca_eval.json"
    aset.write_text(json.dumps([{"instruction": "Name 2 rivers."}, {"output": "no instruction here"}]))
    args = [*_files(tmp_path), "--alpaca-annotator", "weighted_alpaca_eval_gpt4_turbo",
            "--alpaca-eval-set", str(aset)]  # fmt: skip
    _refused(args, tmp_path, capsys, "alpaca_eval.json:2", "'instruction'")


def test_alpaca_options_that_would_do_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _files(tmp_path)
    _refused([*args, "--alpaca-eval-set", str(tmp_path / "prompts.json")], tmp_path, capsys,
             "--alpaca-eval-set", "--alpaca-annotator")  # fmt: skip
    ifeval = tmp_path / "ifeval.jsonl"
    ifeval.write_text(
        json.dumps({"key": 1, "prompt": "Say hi.", "instruction_id_list": [], "kwargs": []}) + "\n"
    )
    heldout = ["eval", "--format", "ifeval", "--prompts", str(ifeval),
               "--alpaca-annotator", "weighted_alpaca_eval_gpt4_turbo", "--out", str(tmp_path / "ev")]  # fmt: skip
    _refused(heldout, tmp_path, capsys, "--alpaca-annotator", "--format alpaca")
