"""`evarl eval --arena-judge-config`: Arena-Hard judging end to end with a real (tiny random) judge model.

A random-weight judge never writes a verdict label, so every game is a counted, reported parse failure and the
score is absent, never a silent loss; the judge prompt's provenance is recorded."""

from __future__ import annotations

import json
from pathlib import Path

from evarl.cli import main


def test_arena_judging_counts_unparsed_verdicts(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    rows = [{"instruction": f"Name {k} rivers.", "dataset": "t"} for k in (2, 3)]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(rows))
    model = tmp_path / "model.json"
    model.write_text(json.dumps([{**r, "output": "The Nile and the Amazon."} for r in rows]))
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps([{**r, "output": "Nile.", "generator": "base"} for r in rows]))
    rc = main(
        ["eval", "--format", "alpaca", "--prompts", str(prompts), "--outputs", str(model),
         "--baseline-outputs", str(base), "--judge", str(tiny_model_dir), "--arena-judge-config", "default",
         "--judge-max-new-tokens", "6", "--bootstrap", "50", "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    arena = json.loads((tmp_path / "ev" / "arena.json").read_text())
    assert arena["n_failed_games"] + arena["n_games"] == 4
    assert "not the official Arena-Hard prompt" in arena["judge_prompt"]
    if arena["n_questions"] == 0:
        assert arena["score"] is None and arena["n_excluded_questions"] == 2
    games = [json.loads(x) for x in (tmp_path / "ev" / "judgements.jsonl").read_text().splitlines()]
    assert len(games) == 2 and all(len(g["raw"]) == 2 for g in games)
