"""Report figures (matplotlib, no pyplot state, no display): each function takes plain data and returns a
`Figure`; `to_png` renders it to PNG bytes that the report both writes under `plots/` and embeds as base64.

The figures follow the eva paper's evidence (seed 001): held-out scores per round with round 0 = θ_0 (Tables
1-2, Figure 5), distributions of the informativeness values (appendix D, Figure 9), prompt complexity and
quality per round (appendix E, Table 7), the curriculum as the category mix of the training prompts per round
(§4.2.5, Figure 6) plus the mix of evolve methods, the training curves, and the reward distributions.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

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
    """Overlaid step histograms (densities) per round, as seed 001 Figure 9 for informativeness."""
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
    """MT-Bench per-category scores as a radar chart, one polygon per model (seed 001 Figure 7).

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
