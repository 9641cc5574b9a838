"""The documented Python API example (docs/python-api.md, the first Python block) runs as written.

The block is executed verbatim in a temporary working directory; only `evarl.load_config` is wrapped to append
overrides that shrink the run (the tiny random Llama instead of SmolLM2, a few short prompts), so the example's
own calls, config and printing are what is tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import evarl

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, f"{DOC}: no python block"
    return blocks[0]


def test_the_documented_example_runs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = [
        f"model.path={tiny_model_dir}",
        "threads=1",
        "task.train_prompts=6",
        "task.heldout_prompts=3",
        "generation.max_new_tokens=8",
        "generation.temperature=1.0",
        "creator.num_evolutions=2",
        "solver.batch_size=2",
        "solver.epochs=1",
        "solver.max_length=160",
        "solver.max_prompt_length=120",
        "eval.max_new_tokens=6",
    ]
    real = evarl.load_config

    def small(config=None, overrides=None):  # noqa: ANN001, ANN202 (the API's own signature)
        return real(config, [*(overrides or []), *tiny])

    monkeypatch.setattr(evarl, "load_config", small)
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), str(DOC), "exec"), {"__name__": "__doc_example__"})
    out = capsys.readouterr().out
    assert "runs/api-demo ipo" in out
    assert re.search(r"round 1: \d+ pairs, held-out reward -?\d\.\d{3} ± \d\.\d{3} \(95%, n=3\)", out), out
    assert (tmp_path / "runs" / "api-demo" / "summary.json").exists()
    assert any((tmp_path / "runs" / "api-demo" / "tensorboard").iterdir())
