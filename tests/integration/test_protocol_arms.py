"""The eva paper's experimental arms as config fields, on a real tiny Llama (SmolLM2's tokenizer).

Ye et al. 2024, "Evolving alignment via asymmetric self-play", arXiv:2411.00062: Table 2 (a plain DPO round
theta_0 -> theta_1 on the original prompts, then eva from theta_1; the "+ new human prompts" arm), Table 5 (the
"no evolve" arms train on the sampled informative subset) and the scratch mode (each prompt trained once).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evarl.config import build_config
from evarl.loop import fresh_split, run


def _cfg(tmp: Path, model: Path, name: str, **creator: Any) -> Any:
    return build_config(
        {
            "name": name,
            "output_dir": str(tmp / "runs"),
            "seed": 5,
            "rounds": 2,
            "threads": 1,
            "model": {"path": str(model)},
            "generation": {"n": 2, "max_new_tokens": 6, "temperature": 1.0, "batch_size": 16},
            "task": {"train_prompts": 8, "heldout_prompts": 2},
            "creator": {"methods": ["constraint"], "num_evolutions": 2, "max_new_tokens": 8, **creator},
            "solver": {
                "batch_size": 4,
                "epochs": 1,
                "max_length": 160,
                "max_prompt_length": 96,
                "learning_rate": 1e-3,
            },
            "eval": {"enabled": False},
        }
    )


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]


def _stages(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def test_start_round_no_evolve_fresh_prompts_and_scratch(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Table 2's order: round 1 is plain DPO on the seed prompts, the creator starts in round 2
    cfg = _cfg(tmp_path, tiny_model_dir, "table2", start_round=2)
    run(cfg, progress=False)
    d = cfg.run_dir
    st = _stages(d)
    assert "round-001/generate" not in st and "round-001/evolve" not in st
    assert _ids(d / "round-001" / "train_prompts.jsonl") == _ids(d / "seed_prompts.jsonl")
    assert st["round-002/evolve"]["status"] == "done"
    assert st["round-002/mix"]["counts"]["evolved"] > 0
    assert (d / "round-002" / "train" / "model").exists()

    # Table 5's "no evolve" arm: train on the sampled informative subset, nothing evolved
    cfg = _cfg(tmp_path, tiny_model_dir, "noevolve", evolve=False, sampler="greedy")
    run(cfg, progress=False)
    d = cfg.run_dir
    for t in (1, 2):
        rd = d / f"round-{t:03d}"
        assert not (rd / "evolved.jsonl").exists()
        assert _ids(rd / "train_prompts.jsonl") == _ids(rd / "sampled.jsonl")
        assert 0 < len(_ids(rd / "train_prompts.jsonl")) < 8
        # round 2 samples again from the same previous set (the seed prompts), not from round 1's subset
        assert _ids(rd / "prompts.jsonl") == _ids(d / "seed_prompts.jsonl")

    # "+ new human prompts": every round a fresh, unseen split of the original pool, as large as the seed set
    # (start_round 1: the run starts from a policy that trained on the seed prompts, so round 1 takes split 1)
    cfg = _cfg(tmp_path, tiny_model_dir, "fresh", enabled=False, fresh_prompts=True)
    run(cfg, progress=False)
    d = cfg.run_dir
    r1, r2 = (_ids(d / f"round-{t:03d}" / "train_prompts.jsonl") for t in (1, 2))
    seed = _ids(d / "seed_prompts.jsonl")
    assert r1 == [p.id for p in fresh_split(cfg, 1)] and r2 == [p.id for p in fresh_split(cfg, 2)]
    assert len(r1) == len(r2) == 8 and not (set(r1) & set(r2)) and not (set(seed) & (set(r1) | set(r2)))

    # scratch: round 2 trains theta_0 on its own set (X_0 and the evolved prompts), each prompt once
    cfg = _cfg(tmp_path, tiny_model_dir, "scratch", mode="scratch")
    run(cfg, progress=False)
    d = cfg.run_dir
    pairs2 = [json.loads(x) for x in (d / "round-002" / "pairs.jsonl").read_text().splitlines() if x]
    refs2 = (d / "round-002" / "ref_logps.jsonl").read_text().splitlines()
    assert len(refs2) == len(pairs2)  # not round 1's pairs again
    assert len({p["prompt_id"] for p in pairs2}) == len(pairs2)
