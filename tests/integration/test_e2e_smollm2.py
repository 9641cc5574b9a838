"""SmolLM2-135M-Instruct (the embedded default) end to end: one small offline eva round, every stage real."""

from __future__ import annotations

import json
from pathlib import Path

from evarl.config import load_config
from evarl.loop import run


def test_one_round_on_smollm2(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "name=e2e",
            "rounds=1",
            "task.train_prompts=6",
            "task.heldout_prompts=3",
            "generation.n=4",
            "generation.temperature=1.0",
            "generation.max_new_tokens=24",
            "creator.max_new_tokens=40",
            "creator.num_evolutions=2",
            "reward.length_penalty=0.001",  # breaks ties between equally verified responses
            "solver.batch_size=2",
            "solver.max_length=192",
            "solver.max_prompt_length=96",
            "eval.max_new_tokens=24",
        ],
    )
    summary = run(cfg, progress=False)
    rd = tmp_path / "e2e"
    manifest = json.loads((rd / "manifest.json").read_text())
    assert all(v["status"] == "done" for v in manifest["stages"].values())
    evolve = manifest["stages"]["round-001/evolve"]["counts"]
    assert evolve["children"] == 2 * manifest["stages"]["round-001/sample"]["counts"]["sampled"]
    assert sum(evolve["dropped"].values()) + evolve["kept"] == evolve["children"]
    for p in (rd / "round-001" / "evolved.jsonl").read_text().splitlines():
        row = json.loads(p)
        assert row["parent_id"] and row["method"] and row["round"] == 1 and row["depth"] >= 1
    pairs = [json.loads(x) for x in (rd / "round-001" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    assert (rd / "round-001" / "train" / "model" / "model.safetensors").exists()
    base, after = summary["base_heldout"], summary["rounds"][0]["heldout"]
    assert base["n"] == after["n"] == 3
    assert "prompt_loose" in after["ifeval"]
    report = (rd / "round-001" / "report.md").read_text()
    assert "held-out" in report.lower()
