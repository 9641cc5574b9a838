"""Rendering: the per-round `round-00t/report.md`, and for one or more runs a self-contained `report.html`
(plots embedded as base64, no scripts, no external resources), `report.md`, `plots/*.png` and `report.json`
(the numbers behind the tables). The report writes only these names, so it never overwrites a file the run
itself wrote (a run's own `summary.json` stays the loop's).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from evarl.eval.report.figures import Plot, compare_figure, run_figures
from evarl.eval.report.load import RoundData, RunData, load_run
from evarl.eval.report.tables import (
    Table,
    benchmark_name,
    comparison_table,
    delta,
    differing_config,
    evolved_examples_table,
    fmt,
    get_dotted,
    head_to_head_table,
    heldout_columns,
    heldout_examples_table,
    heldout_table,
    manifest_stages,
    round_summary,
    rounds_table,
    scoring_table,
    stage_counts,
    timings_table,
)
from evarl.io import write_json, write_text

REPORT_JSON = "report.json"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
table.text td{white-space:normal;text-align:left;min-width:8em;max-width:32em;vertical-align:top}
details pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
figcaption{font-size:.85em;color:#555}.notes{background:#fff8e1;border:1px solid #f0d98c;padding:.5em 1em}
code{background:#f5f5f5;padding:0 .2em}
"""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def _rounds_str(run: RunData) -> str:
    return ", ".join(str(r) for r in sorted(run.rounds)) or "none"


def _figure_html(p: Plot) -> str:
    b64 = base64.b64encode(p.png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(p.title)}" data-plot="{html.escape(p.name)}" '
        f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(p.title)} '
        f"(<code>plots/{html.escape(p.name)}.png</code>)</figcaption></figure>"
    )


def write_round_markdown(run_dir: Path, round_idx: int) -> Path:
    """round-00t/report.md: stage status, prompts, pairs, reward before/after, held-out vs base and previous."""
    run = load_run(Path(run_dir))
    rdir = Path(run_dir) / f"round-{round_idx:03d}"
    rd = run.rounds.get(round_idx) or RoundData(round_idx, rdir)
    s = round_summary(rd)
    lines = [f"# {run.name}: round {round_idx}", ""]
    stages = {
        k.split("/", 1)[1]: v
        for k, v in manifest_stages(run).items()
        if isinstance(v, dict) and k.startswith(f"round-{round_idx:03d}/")
    }
    if stages:
        t = Table(
            ["stage", "status", "seconds", "counts"],
            [
                [
                    k,
                    str(v.get("status", "—")),
                    fmt(v.get("seconds")),
                    stage_counts(v.get("counts") or {}),
                ]
                for k, v in stages.items()
            ],
        )
        lines += ["## Stages", "", t.to_md(), ""]
    lines += ["## Creator", ""]
    lines.append(f"- prompts whose informativeness was estimated: {fmt(s['prompts'])}")
    if s["info"]:
        i = s["info"]
        lines.append(
            f"- informativeness info(x): mean {fmt(i['mean'])}, median {fmt(i['median'])}, "
            f"max {fmt(i['max'])} (n={i['n']})"
        )
    lines.append(f"- sampled for evolving: {fmt(s['sampled'])}; evolved prompts kept: {fmt(s['evolved'])}")
    if s["methods"]:
        lines.append("- evolve methods: " + ", ".join(f"{k} {v}" for k, v in sorted(s["methods"].items())))
    if s["mean_depth"] is not None:
        lines.append(f"- mean evolution depth: {fmt(s['mean_depth'])}")
    lines.append(
        f"- training prompts: {fmt(s['train_prompts'])} (evolved share {fmt(s['evolved_share'], 'pct')} %)"
    )
    if s["categories"]:
        lines.append("- categories: " + ", ".join(f"{k} {v}" for k, v in sorted(s["categories"].items())))
    if s["complexity"] is not None or s["quality"] is not None:
        lines.append(f"- prompt complexity {fmt(s['complexity'])}, quality {fmt(s['quality'])} (1-5)")
    lines += ["", "## Solver", ""]
    tr = s["train_reward"]
    if tr:
        lines.append(
            f"- reward of π_{{t-1}} on the training prompts: mean {fmt(tr['mean'])} ± {fmt(tr['std'])} "
            f"(n={tr['n']}, failed {tr['failed']})"
        )
    lines.append(
        f"- pairs: {fmt(s['pairs'])}; chosen reward {fmt(s['chosen_reward_mean'])}, rejected reward "
        f"{fmt(s['rejected_reward_mean'])}, mean margin {fmt(s['pair_margin_mean'])}"
    )
    if s["reward_length_pearson_train"] is not None:
        lines.append(
            f"- reward-length Pearson r per prompt (mean): {fmt(s['reward_length_pearson_train'])} (seed 003 Fig. 3)"
        )
    if s["train_steps"] is not None:
        lines.append(
            f"- training: {s['train_steps']} steps, loss {fmt(s['loss_first'])} → {fmt(s['loss_last'])}, "
            f"last reward accuracy {fmt(s['reward_accuracy_last'])}, last margin {fmt(s['reward_margin_last'])}"
        )
    lines += ["", "## Held-out", ""]
    base = run.rounds[0].heldout if 0 in run.rounds else None
    prev = run.rounds[round_idx - 1].heldout if (round_idx - 1) in run.rounds else None
    cur = rd.heldout
    if cur is None and base is None:
        lines.append("No held-out evaluation for this round yet.")
    else:
        cols = [
            ("base (round 0)", base),
            (f"previous (round {round_idx - 1})", prev),
            (f"round {round_idx}", cur),
        ]
        if round_idx <= 1:
            cols = [cols[0], cols[2]]
        rows = []
        for label, key, kind in heldout_columns(benchmark_name([base, prev, cur])):
            row = [label] + [fmt(get_dotted(h, key), kind) for _, h in cols]
            row.append(delta(cur, base, key, kind) if cur is not None and base is not None else "—")
            rows.append(row)
        lines.append(Table(["metric"] + [c for c, _ in cols] + ["Δ vs base"], rows).to_md())
    if rd.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rd.notes]
    rdir.mkdir(parents=True, exist_ok=True)
    return write_text(rdir / "report.md", "\n".join(lines) + "\n")


def build_report(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Write out_dir/report.html (self-contained), out_dir/report.md, out_dir/plots/*.png, out_dir/report.json.

    `report.json` holds the numbers behind the tables (per run and round, and the differing config keys); it
    is not named `summary.json`, which in a run directory is the loop's own summary and is left as it is.

    Returns {"html", "markdown", "json", "plots": [paths], "runs": [names], "notes": [...]}.
    """
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    runs = [load_run(Path(d)) for d in run_dirs]
    slugs: list[str] = []
    for r in runs:
        s = _slug(r.name)
        while s in slugs:
            s += "-2"
        slugs.append(s)
    md: list[str] = ["# evarl report", ""]
    body: list[str] = ["<h1>evarl report</h1>"]
    md.append("Runs: " + ", ".join(f"`{r.name}` ({r.path})" for r in runs))
    body.append("<p>Runs: " + ", ".join(f"<code>{html.escape(r.name)}</code>" for r in runs) + "</p>")
    plot_paths: list[Path] = []
    all_plots: list[tuple[str, Plot]] = []
    per_run_sections: list[tuple[RunData, list[Plot]]] = []
    for run, slug in zip(runs, slugs):
        per_run_sections.append((run, run_figures(run, slug)))
    cp = compare_figure(runs) if len(runs) > 1 else None
    all_notes = [f"{r.name}: {n}" for r in runs for n in r.notes]
    if all_notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in all_notes]
        body.append(
            '<div class="notes"><h2>Notes</h2><ul>'
            + "".join(f"<li>{html.escape(n)}</li>" for n in all_notes)
            + "</ul></div>"
        )
    if len(runs) > 1:
        md += ["", "## Comparison", ""]
        body.append("<h2>Comparison</h2>")
        t = comparison_table(runs)
        if t is not None:
            caption = (
                "Rows: θ_0 then each run at its last evaluated round; columns: the config fields that differ, then "
                "held-out metrics (Δ vs θ_0 in brackets)."
            )
            md += [caption, "", t.to_md()]
            body += [f"<p>{html.escape(caption)}</p>", t.to_html()]
        if cp is not None:
            all_plots.append(("compare", cp))
            md += ["", f"![{cp.title}](plots/{cp.name}.png)"]
            body.append(_figure_html(cp))
    for run, plots_ in per_run_sections:
        md += ["", f"## Run `{run.name}`", ""]
        body.append(f"<h2>Run <code>{html.escape(run.name)}</code></h2>")
        body.append(f"<p>{html.escape(str(run.path))}; rounds found: {html.escape(_rounds_str(run))}</p>")
        md.append(f"{run.path}; rounds found: {_rounds_str(run)}")
        tables = (
            ("Held-out scores per round", heldout_table(run)),
            ("Rounds", rounds_table(run)),
            ("Scoring: responses the reward could not score", scoring_table(run)),
            ("Head to head between iterates (evarl h2h)", head_to_head_table(run)),
            ("Stage timings (seconds, from manifest.json)", timings_table(run)),
        )
        for title, t in tables:
            if t is None:
                continue
            md += ["", f"### {title}", "", t.to_md()]
            body += [f"<h3>{html.escape(title)}</h3>", t.to_html()]
            if title.startswith("Held-out") and any("[" in str(c) for row in t.rows for c in row):
                note = (
                    "Brackets: 95% bootstrap interval over the held-out prompts; Δ vs base is paired by prompt "
                    "(* = its interval excludes no change)."
                )
                md += ["", note]
                body.append(f"<p>{html.escape(note)}</p>")
        for p in plots_:
            all_plots.append((run.name, p))
            md += ["", f"### {p.title}", "", f"![{p.title}](plots/{p.name}.png)"]
            body += [f"<h3>{html.escape(p.title)}</h3>", _figure_html(p)]
        for title, t in (
            ("Evolved prompts (examples: parent → child)", evolved_examples_table(run)),
            ("Held-out responses: base policy vs last evaluated round", heldout_examples_table(run)),
        ):
            if t is not None:
                md += ["", f"### {title}", "", t.to_md()]
                body += [f"<h3>{html.escape(title)}</h3>", t.to_html(wrap=True)]
        cfg_path = run.path / "config.yaml"
        if cfg_path.exists():
            text = cfg_path.read_text(encoding="utf-8", errors="replace")
            md += ["", "### Config", "", "```yaml", text.rstrip(), "```"]
            body.append(f"<details><summary>config.yaml</summary><pre>{html.escape(text)}</pre></details>")
    for _, p in all_plots:
        plot_dir.mkdir(parents=True, exist_ok=True)
        path = plot_dir / f"{p.name}.png"
        path.write_bytes(p.png)
        plot_paths.append(path)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>evarl report</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        "<body>" + "\n".join(body) + "</body></html>\n"
    )
    html_path = write_text(out_dir / "report.html", page)
    md_path = write_text(out_dir / "report.md", "\n".join(md) + "\n")
    data = {
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "rounds": {str(k): round_summary(v) for k, v in sorted(r.rounds.items())},
                "notes": r.notes,
            }
            for r in runs
        ],
        "differing_config": differing_config(runs),
    }
    json_path = write_json(out_dir / REPORT_JSON, data, sort_keys=True)
    return {
        "html": html_path,
        "markdown": md_path,
        "json": json_path,
        "plots": plot_paths,
        "runs": [r.name for r in runs],
        "notes": all_notes,
    }
