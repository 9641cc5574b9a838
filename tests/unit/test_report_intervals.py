"""The report's held-out cells carry their 95% intervals and Δ vs base is paired by prompt."""

from __future__ import annotations

from evarl.eval.report.tables import cell_with_interval, paired_delta


def _h(rewards: list[float]) -> dict:
    from evarl.eval.stats import mean_interval

    per = {
        f"p{i}": {"reward": r, "prompt_loose": float(r > 0.5), "prompt_strict": None}
        for i, r in enumerate(rewards)
    }
    return {
        "mean_reward": sum(rewards) / len(rewards),
        "intervals": {"mean_reward": mean_interval(rewards)},
        "per_prompt": per,
        "ifeval": {"prompt_loose": sum(r > 0.5 for r in rewards) / len(rewards)},
    }


def test_cells_show_intervals_and_paired_deltas() -> None:
    base = _h([0.1 * (i % 10) for i in range(50)])
    new = _h([min(1.0, 0.1 * (i % 10) + 0.3) for i in range(50)])
    cell = cell_with_interval(new, "mean_reward", "num")
    assert cell.startswith(f"{new['mean_reward']:.3f} [") and cell.endswith("]")
    d = paired_delta(new, base, "mean_reward", "num")
    assert d.startswith("+0.2") and d.endswith("]*")  # every prompt improved: the interval excludes 0
    # no interval recorded (an older eval.json): the plain value, and the unpaired difference
    old = {"mean_reward": 0.5}
    assert cell_with_interval(old, "mean_reward", "num") == "0.500"
    assert paired_delta(old, {"mean_reward": 0.25}, "mean_reward", "num") == "+0.250"


def test_report_shows_scoring_failures_and_head_to_head(tmp_path) -> None:
    import json

    from evarl.eval.report import build_report
    from tests.unit.test_eval_report import make_run

    run_dir = make_run(tmp_path, "pipe")
    m = json.loads((run_dir / "manifest.json").read_text())
    m["stages"]["round-001/train_score"] = {"status": "done", "counts": {"scored": 40, "failed": 10}}
    (run_dir / "manifest.json").write_text(json.dumps(m))
    h2h = {
        "comparisons": [
            {"model": 1, "baseline": 0, "n_total": 20, "n_wins": 9, "n_ties": 6, "n_losses": 5, "n_failed": 4,
             "win_rate": 60.0, "win_rate_ci": [45.0, 75.0]}
        ]
    }  # fmt: skip
    (run_dir / "head_to_head.json").write_text(json.dumps(h2h))
    res = build_report([run_dir], tmp_path / "out")
    md = res["markdown"].read_text()
    assert "### Scoring: responses the reward could not score" in md
    assert "| round-001/train_score | 40 | 10 | 25.0 [" in md
    assert "### Head to head between iterates (evarl h2h)" in md
    assert "| 1 vs 0 | 20 | 9 | 6 | 5 | 4 | 60.0 [45.0, 75.0] |" in md
