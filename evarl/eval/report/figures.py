"""The report's figures: matplotlib drawing functions (plain data in, a `Figure` out, no pyplot state, no
display), `to_png`, and the sets of figures a run's report and a comparison of runs show.

The figures follow the evidence of eva (Ye et al., 2024, arXiv:2410.23563): held-out scores per round with round
0 = θ_0 (Tables 1-2, Figure 5), the distributions of the informativeness values (appendix D, Figure 9), prompt
complexity and quality per round (appendix E, Table 7), the curriculum as the category mix of the training
prompts per round (§4.2.5, Figure 6) plus the mix of evolve methods, the training curves, the reward
distributions, and MT-Bench scores per category as a radar chart (Figure 7). A figure that fails to draw is
skipped and becomes a note on the run; it never fails the report.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from evarl.eval.report.load import RunData
from evarl.eval.report.tables import benchmark_name, get_dotted, round_summary, valid_rewards

_W, _H = 7.0, 3.6
_DPI = 100


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


def heldout_curves(series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> Figure:
    """One panel per metric; one line per run. `series[metric][run] = [(round, value), ...]`."""
    metrics = list(series)
    fig = Figure(figsize=(_W, 2.8 * max(1, (len(metrics) + 1) // 2)))
    cols = 2 if len(metrics) > 1 else 1
    rows = (len(metrics) + cols - 1) // cols
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        for run, pts in series[metric].items():
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=run)
        _style(ax, metric, "round (0 = base policy)", "")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(series[metric]) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def distributions_by_round(values: Mapping[int, Sequence[float]], title: str, ylabel: str) -> Figure:
    """Box plot per round (reward or informativeness distributions), with the per-round count on the axis."""
    fig = Figure(figsize=(_W, _H))
    ax = fig.add_subplot(1, 1, 1)
    rounds = sorted(values)
    ax.boxplot([list(values[r]) for r in rounds], showmeans=True)
    ax.set_xticks(range(1, len(rounds) + 1), [f"{r}\n(n={len(values[r])})" for r in rounds])
    _style(ax, title, "round", ylabel)
    fig.tight_layout()
    return fig


def histograms_by_round(
    values: Mapping[int, Sequence[float]], title: str, xlabel: str, bins: int = 20
) -> Figure:
    """Overlaid step histograms (densities) per round, as eva's Figure 9 for informativeness."""
    fig = Figure(figsize=(_W, _H))
    ax = fig.add_subplot(1, 1, 1)
    allv = [v for r in values for v in values[r]]
    lo, hi = (min(allv), max(allv)) if allv else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    for r in sorted(values):
        if values[r]:
            ax.hist(
                values[r],
                bins=bins,
                range=(lo, hi),
                density=True,
                histtype="step",
                lw=1.5,
                label=f"round {r}",
            )
    _style(ax, title, xlabel, "density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def stacked_shares(counts: Mapping[int, Mapping[str, int]], title: str) -> Figure:
    """Stacked bars of each label's share per round (curriculum: categories, evolve methods)."""
    fig = Figure(figsize=(_W, _H))
    ax = fig.add_subplot(1, 1, 1)
    rounds = sorted(counts)
    labels = sorted({k for r in rounds for k in counts[r]})
    bottom = [0.0] * len(rounds)
    cmap = _colors(len(labels))
    for i, lab in enumerate(labels):
        shares = []
        for r in rounds:
            tot = sum(counts[r].values())
            shares.append(counts[r].get(lab, 0) / tot if tot else 0.0)
        ax.bar([str(r) for r in rounds], shares, bottom=bottom, label=lab, color=cmap[i])
        bottom = [b + s for b, s in zip(bottom, shares)]
    _style(ax, title, "round", "share")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def means_by_round(series: Mapping[str, Sequence[tuple[int, float]]], title: str, ylabel: str) -> Figure:
    """Line per named series over rounds (prompt complexity and quality, 1-5, per round)."""
    fig = Figure(figsize=(_W, _H))
    ax = fig.add_subplot(1, 1, 1)
    for name, pts in series.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=name)
    _style(ax, title, "round", ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_curves(steps: Sequence[dict], keys: Sequence[str], boundaries: Sequence[int] = ()) -> Figure:
    """One panel per logged key against the global optimizer step; dashed lines mark round boundaries."""
    present = [k for k in keys if any(isinstance(s.get(k), int | float) for s in steps)]
    cols = 2 if len(present) > 1 else 1
    rows = max(1, (len(present) + cols - 1) // cols)
    fig = Figure(figsize=(_W, 2.6 * rows))
    for i, k in enumerate(present):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(s["global_step"], s[k]) for s in steps if isinstance(s.get(k), int | float)]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1.2, marker="o" if len(xs) <= 30 else None, ms=3)
        for b in boundaries:
            ax.axvline(b, color="grey", ls="--", lw=0.8)
        _style(ax, k, "optimizer step", "")
    fig.tight_layout()
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def category_radar(
    scores: Mapping[str, Mapping[str, float | None]], scale: tuple[float, float] = (0, 10)
) -> Figure:
    """MT-Bench per-category scores as a radar chart, one polygon per model (eva, Figure 7).

    `scores[model][category]`; categories missing for a model (all grades failed) are drawn at the centre.
    """
    import math

    cats = sorted({c for s in scores.values() for c in s})
    if len(cats) < 3:
        raise ValueError(f"a radar chart needs at least 3 categories, got {len(cats)}")
    angles = [2 * math.pi * k / len(cats) for k in range(len(cats))]
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1, projection="polar")
    for model, s in scores.items():
        vals = [s.get(c) if s.get(c) is not None else scale[0] for c in cats]
        ax.plot(angles + angles[:1], vals + vals[:1], marker="o", ms=3, label=model)
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.1)
    ax.set_xticks(angles, cats, fontsize=8)
    ax.set_ylim(*scale)
    ax.set_title("MT-Bench score per category", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.25, 1.1))
    return fig


TRAIN_KEYS = ("loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp", "lr")


@dataclass
class Plot:
    """A rendered figure: written as plots/<name>.png and embedded in the HTML page."""

    name: str  # file stem under plots/
    title: str
    png: bytes


def run_figures(run: RunData, slug: str) -> list[Plot]:
    """The figures of one run (names prefixed with `slug`); a figure that fails to draw becomes a run note."""
    out: list[Plot] = []
    rounds = sorted(run.rounds)

    def add(name: str, title: str, make: Any) -> None:
        try:
            png = to_png(make())
        except Exception as e:  # noqa: BLE001 - a bad figure is a note, not a crash
            run.notes.append(f"plot {name}: skipped ({type(e).__name__}: {e})")
            return
        out.append(Plot(f"{slug}-{name}", title, png))

    held = {r: run.rounds[r].heldout for r in rounds if run.rounds[r].heldout is not None}
    if held:
        series: dict[str, dict[str, list[tuple[int, float]]]] = {}
        bench = benchmark_name(list(held.values()))
        for label, key in [
            ("mean held-out reward", "mean_reward"),
            (f"{bench} prompt-level loose", "ifeval.prompt_loose"),
            (f"{bench} instruction-level loose", "ifeval.inst_loose"),
            ("mean length (tokens)", "mean_length"),
        ]:
            pts = [
                (r, float(get_dotted(h, key)))
                for r, h in held.items()
                if isinstance(get_dotted(h, key), int | float)
            ]
            if pts:
                series[label] = {run.name: pts}
        if series:
            add(
                "heldout",
                "Held-out scores per round (round 0 = base policy)",
                lambda: heldout_curves(series),
            )
    ev = {r: valid_rewards(run.rounds[r].rows("eval_generations.jsonl")) for r in rounds}
    ev = {r: v for r, v in ev.items() if v}
    if ev:
        add(
            "heldout-rewards",
            "Held-out reward distribution per round",
            lambda: distributions_by_round(ev, "held-out rewards", "reward"),
        )
    tr = {r: valid_rewards(run.rounds[r].rows("train_scores.jsonl")) for r in rounds}
    tr = {r: v for r, v in tr.items() if v}
    if tr:
        add(
            "train-rewards",
            "Reward distribution of π_{t-1} on each round's training prompts",
            lambda: distributions_by_round(tr, "training-prompt rewards", "reward"),
        )
    info = {
        r: [
            float(x["value"])
            for x in run.rounds[r].rows("info.jsonl") or []
            if isinstance(x.get("value"), int | float)
        ]
        for r in rounds
    }
    info = {r: v for r, v in info.items() if v}
    if info:
        add(
            "informativeness",
            "Informativeness distribution per round (seed 001 Fig. 9)",
            lambda: histograms_by_round(info, "informativeness info(x)", "info(x)"),
        )
    sums = {r: round_summary(run.rounds[r]) for r in rounds}
    cq: dict[str, list[tuple[int, float]]] = {
        "complexity": [(r, s["complexity"]) for r, s in sums.items() if s["complexity"] is not None],
        "quality": [(r, s["quality"]) for r, s in sums.items() if s["quality"] is not None],
    }
    if cq["complexity"] or cq["quality"]:
        add(
            "prompt-scores",
            "Prompt complexity and quality per round (seed 001 Table 7)",
            lambda: means_by_round(cq, "prompt complexity / quality (1-5)", "mean score"),
        )
    cats = {r: s["categories"] for r, s in sums.items() if s["categories"]}
    if cats:
        add(
            "curriculum",
            "Curriculum: category mix of the training prompts (seed 001 Fig. 6)",
            lambda: stacked_shares(cats, "category share of training prompts"),
        )
    methods = {r: s["methods"] for r, s in sums.items() if s["methods"]}
    if methods:
        add(
            "evolve-methods",
            "Evolve-method mix of the evolved prompts",
            lambda: stacked_shares(methods, "evolve method share"),
        )
    steps: list[dict[str, Any]] = []
    bounds: list[int] = []
    offset = 0
    for r in rounds:
        log = run.rounds[r].train_log
        if not log:
            continue
        if steps:
            bounds.append(offset)
        for i, s in enumerate(log):
            st = s.get("step")
            steps.append({**s, "global_step": offset + (st if isinstance(st, int) else i + 1)})
        offset = steps[-1]["global_step"]
    if steps:
        add(
            "training",
            "Solver training curves (dashed: round boundaries)",
            lambda: training_curves(steps, TRAIN_KEYS, bounds),
        )
    return out


def compare_figure(runs: Sequence[RunData]) -> Plot | None:
    """Held-out reward and prompt-level loose accuracy per round, one line per run (None: nothing to draw)."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    bench = benchmark_name([x.heldout for run in runs for x in run.rounds.values()])
    for label, key in [
        ("mean held-out reward", "mean_reward"),
        (f"{bench} prompt-level loose", "ifeval.prompt_loose"),
    ]:
        per_run = {}
        for run in runs:
            pts = [
                (r, float(get_dotted(run.rounds[r].heldout, key)))
                for r in sorted(run.rounds)
                if isinstance(get_dotted(run.rounds[r].heldout, key), int | float)
            ]
            if pts:
                per_run[run.name] = pts
        if per_run:
            series[label] = per_run
    if not series:
        return None
    try:
        png = to_png(heldout_curves(series))
    except Exception as e:  # noqa: BLE001 - a bad figure is a note, not a crash
        runs[0].notes.append(f"plot compare-heldout: skipped ({type(e).__name__}: {e})")
        return None
    return Plot("compare-heldout", "Held-out scores per round, all runs", png)
