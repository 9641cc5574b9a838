"""`evarl ablate`: study validation, arm isolation, the equal pair count, aggregation and its reading.

The aggregation reads real run files that the tests write (eval.json with per-prompt numbers, manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evarl.ablate import (
    ARMS,
    Study,
    aggregate,
    arm_config,
    check_study,
    load_study,
    render_markdown,
)
from evarl.cli import main
from evarl.config import ConfigError
from evarl.eval.stats import hierarchical_bootstrap


def test_builtin_arms_change_only_their_field() -> None:
    s = Study(output_dir="/tmp/x", overrides={"task.train_prompts": 96})
    assert check_study(s) == []
    cfg = arm_config(s, "no_evolve_greedy", 1)
    assert (cfg.creator.evolve, cfg.creator.sampler, cfg.seed, cfg.rounds) == (False, "greedy", 1, 1)
    assert cfg.solver.max_pairs == s.pairs and cfg.model.path.endswith("theta1/round-001/train/model")
    assert arm_config(s, "new_prompts", 0).creator.fresh_prompts is True
    assert set(ARMS) >= {"eva", "new_prompts", "greedy", "no_evolve_sample", "uniform", "inv_a_min", "a_avg"}


def test_an_arm_that_changes_more_than_its_field_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "study.yaml"
    p.write_text(
        "arms: [eva, sneaky]\n"
        "custom_arms:\n  sneaky: {overrides: {creator.metric: a_avg, solver.beta: 0.5}, vary: [creator.metric]}\n"
    )
    with pytest.raises(ConfigError, match="sneaky.*differ from the fields it is meant to vary"):
        load_study(p)
    # a preset changes many solver fields at once: the arm differs from eva in more than its declared field
    p.write_text("arms: [eva, preset]\ncustom_arms:\n  preset: {overrides: {solver.preset: sppo}}\n")
    errs = check_study(load_study(p))
    assert any("arm preset: differs from the eva arm in" in e and "solver.loss" in e for e in errs), errs


def test_arms_that_cannot_reach_the_pair_count_are_refused_before_compute(tmp_path: Path) -> None:
    s = Study(output_dir=str(tmp_path), pairs=30, overrides={"task.train_prompts": 96})
    errs = check_study(s)
    assert any("arm no_evolve_sample: can build at most 24 pairs" in e for e in errs), errs
    assert not any(e.startswith("arm eva:") for e in errs)


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("seeds: []\n", "seeds"),
        ("seeds: [1, 1]\n", "repeated seeds"),
        ("pairs: 0\n", "pairs"),
        ("arms: [eva, nosuch]\n", "unknown arms"),
        ("arms: [greedy]\n", "must include eva"),
        ("colour: red\n", "colour: unknown study field"),
        ("overrides: [1, 2]\n", "overrides"),
        ("theta1_seed: first\n", "theta1_seed"),
    ],
)
def test_bad_study_files_name_the_field(tmp_path: Path, capsys, text: str, culprit: str) -> None:
    p = tmp_path / "study.yaml"
    p.write_text(text)
    before = p.read_bytes()
    assert main(["ablate", str(p), "--check"]) == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err
    assert p.read_bytes() == before and sorted(x.name for x in tmp_path.iterdir()) == ["study.yaml"]


def test_check_counts_the_runs(tmp_path: Path, capsys) -> None:
    assert main(["ablate", f"output_dir={tmp_path}", "seeds=[0,1,2]", "--check"]) == 0
    assert "28 runs" in capsys.readouterr().out  # theta_1 + 9 arms x 3 seeds


def _write_run(d: Path, per_prompt: dict[str, float], pairs: int) -> None:
    (d / "round-001").mkdir(parents=True)
    pp = {
        k: {"reward": v, "prompt_loose": float(v > 0.5), "prompt_strict": None} for k, v in per_prompt.items()
    }
    (d / "round-001" / "eval.json").write_text(json.dumps({"heldout": {"per_prompt": pp}}))
    (d / "manifest.json").write_text(
        json.dumps({"stages": {"round-001/pairs": {"counts": {"pairs": pairs}}}})
    )


def test_aggregate_pairs_by_seed_and_prompt_excludes_short_runs_and_reads_plainly(tmp_path: Path) -> None:
    s = Study(
        output_dir=str(tmp_path), name="st", seeds=[0, 1, 2], pairs=10, arms=["eva", "greedy", "uniform"]
    )
    rng = np.random.default_rng(0)
    prompts = [f"h{i}" for i in range(60)]
    base = {p: float(rng.normal()) for p in prompts}
    _write_run(s.dir / "theta1", base, 10)
    for seed in s.seeds:
        _write_run(s.dir / f"eva-s{seed}", {p: base[p] + 0.5 for p in prompts}, 10)
        # greedy is clearly worse than eva, uniform indistinguishable; uniform seed 2 built too few pairs
        _write_run(s.dir / f"greedy-s{seed}", {p: base[p] + 0.1 for p in prompts}, 12)
        noise = rng.normal(0, 0.3, len(prompts))
        _write_run(
            s.dir / f"uniform-s{seed}",
            {p: base[p] + 0.5 + e for p, e in zip(prompts, noise)},
            10 if seed < 2 else 7,
        )
    res = aggregate(s, n_boot=300)
    eva, greedy, uni = (res["arms"][a] for a in ("eva", "greedy", "uniform"))
    assert eva["reward_vs_theta1"]["mean"] == pytest.approx(0.5)
    assert greedy["reward_vs_eva"]["mean"] == pytest.approx(-0.4) and greedy["reward_vs_eva"]["excludes_zero"]
    assert uni["seeds"] == [0, 1] and uni["reward"]["n_groups"] == 2
    assert res["excluded"] == [{"arm": "uniform", "seed": 2, "reason": "built 7 pairs, fewer than 10"}]
    text = " ".join(res["reading"])
    assert "greedy sample + evolve minus eva" in text and "reproduced" in text
    md = render_markdown(s, res)
    assert "## Table 4: informativeness metric" in md and "## Table 5: sampling and evolving" in md
    assert "uniform seed 2: built 7 pairs" in md and "(n=180)" in md


def test_hierarchical_bootstrap_is_wider_when_seeds_disagree() -> None:
    agree = hierarchical_bootstrap([[0.0, 1.0] * 20] * 3, n_boot=500)
    disagree = hierarchical_bootstrap(
        [[x + o for x in [0.0, 1.0] * 20] for o in (-1.0, 0.0, 1.0)], n_boot=500
    )
    assert agree["mean"] == pytest.approx(0.5) and disagree["mean"] == pytest.approx(0.5)
    assert (disagree["hi"] - disagree["lo"]) > 2 * (agree["hi"] - agree["lo"])
    assert (agree["n_groups"], agree["n_items"]) == (3, 120)


def test_the_shipped_small_study_is_the_built_in_default() -> None:
    root = Path(__file__).resolve().parents[2]
    small = load_study(root / "configs" / "ablation" / "small.yaml")
    default = Study()
    assert (small.overrides, small.pairs, small.seeds, small.arms, small.name) == (
        default.overrides,
        default.pairs,
        default.seeds,
        default.arms,
        default.name,
    )
