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
