"""`evarl ablate` end to end on a real tiny Llama: theta_1, two arms x two seeds, the table, and a resume that
redoes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from evarl.cli import main


def test_tiny_study_runs_resumes_and_reports(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "output_dir": str(tmp_path / "runs"),
                "seeds": [0, 1],
                "pairs": 2,
                "arms": ["eva", "no_evolve_sample"],
                "overrides": {
                    "threads": 1,
                    "model.path": str(tiny_model_dir),
                    "task.train_prompts": 8,
                    "task.heldout_prompts": 6,
                    "generation.n": 2,
                    "generation.max_new_tokens": 6,
                    "generation.temperature": 1.0,
                    # a random model rarely meets a constraint: the length source breaks the ties
                    "reward.sources": [{"name": "verifier"}, {"name": "length", "weight": 0.01}],
                    "creator.methods": ["constraint"],
                    "creator.num_evolutions": 2,
                    "creator.sample_fraction": 0.5,
                    "solver.batch_size": 2,
                    "solver.epochs": 1,
                    "solver.max_length": 160,
                    "solver.max_prompt_length": 96,
                    "solver.learning_rate": 0.001,
                    "eval.max_new_tokens": 6,
                },
            }
        )
    )
    assert main(["ablate", str(study), "--quiet"]) == 0
    d = tmp_path / "runs" / "tiny"
    for run in ("theta1", "eva-s0", "eva-s1", "no_evolve_sample-s0", "no_evolve_sample-s1"):
        assert (d / run / "manifest.json").exists(), run
    # every arm starts from theta_1 and trains on exactly `pairs` pairs
    for run in ("eva-s0", "no_evolve_sample-s1"):
        cfg = yaml.safe_load((d / run / "config.yaml").read_text())
        assert cfg["model"]["path"] == str(d / "theta1" / "round-001" / "train" / "model")
        pairs = (d / run / "round-001" / "pairs.jsonl").read_text().splitlines()
        assert len(pairs) == 2
    res = json.loads((d / "ablation.json").read_text())
    row = res["arms"]["no_evolve_sample"]
    assert row["reward"]["n_groups"] == 2 and row["reward"]["n_items"] == 12
    assert row["reward_vs_eva"]["lo"] <= row["reward_vs_eva"]["mean"] <= row["reward_vs_eva"]["hi"]
    md = (d / "ablation.md").read_text()
    assert "## Table 5: sampling and evolving" in md and (d / "ablation.png").exists()

    # a second invocation resumes: every stage is already done, the numbers are the same
    manifests = {p: p.read_bytes() for p in d.glob("*/manifest.json")}
    capsys.readouterr()
    assert main(["ablate", str(study), "--quiet"]) == 0
    assert json.loads((d / "ablation.json").read_text())["arms"] == res["arms"]
    for p, before in manifests.items():
        stages = json.loads(p.read_text())["stages"]
        assert stages == json.loads(before)["stages"], p
