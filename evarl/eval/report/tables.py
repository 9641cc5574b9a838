"""The numbers of a report and the tables that show them: per-round summaries, held-out scores per round
(round 0 = the base policy θ_0), stage timings, example prompts and responses, and the comparison of several
runs in the form of the ablation tables of eva (Ye et al., 2024, arXiv:2410.23563, Tables 4-6).

Everything here is a pure function of the loaded rows (`evarl.eval.report.load`); `Table` renders itself as
Markdown or HTML.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evarl.eval.report.load import RoundData, RunData
from evarl.eval.stats import per_prompt_pearson, reward_stats

_IGNORED_CONFIG_KEYS = {"name", "output_dir"}


HELDOUT_COLUMNS: list[tuple[str, str, str]] = [
    ("mean reward", "mean_reward", "num"),
    ("reward std", "reward_std", "num"),
    ("IFEval prompt strict (%)", "ifeval.prompt_strict", "pct"),
    ("IFEval prompt loose (%)", "ifeval.prompt_loose", "pct"),
    ("IFEval inst strict (%)", "ifeval.inst_strict", "pct"),
    ("IFEval inst loose (%)", "ifeval.inst_loose", "pct"),
    ("mean length (tokens)", "mean_length", "num"),
    ("reward-length r", "reward_length_pearson", "num"),
    ("failed", "failed", "int"),
]


def valid_rewards(rows: list[dict[str, Any]] | None, key: str = "reward") -> list[float]:
    """The numeric, non-NaN `key` values of the rows that did not fail."""
    out = []
    for r in rows or []:
        v = r.get(key)
        if not r.get("failed") and isinstance(v, int | float) and not math.isnan(v):
            out.append(float(v))
    return out


def _length_pearson(gens: list[dict[str, Any]] | None, scores: list[dict[str, Any]] | None) -> float | None:
    """Mean over prompts of Pearson(reward, length in tokens) across each prompt's samples (RLHF Workflow,
    Dong et al., 2024, arXiv:2405.07863, Figure 3)."""
    if not gens or not scores:
        return None
    length = {(g.get("prompt_id"), g.get("index")): g.get("num_tokens") for g in gens}
    groups: dict[Any, tuple[list[float], list[float]]] = {}
    for s in scores:
        n = length.get((s.get("prompt_id"), s.get("index")))
        v = s.get("reward")
        if s.get("failed") or not isinstance(v, int | float) or not isinstance(n, int | float):
            continue
        rs, ls = groups.setdefault(s.get("prompt_id"), ([], []))
        rs.append(float(v))
        ls.append(float(n))
    return per_prompt_pearson(list(groups.values()))["mean"]


def round_summary(rd: RoundData) -> dict[str, Any]:
    """The per-round numbers shown in the tables (None where the source file is missing)."""

    def count(name: str) -> int | None:
        rows = rd.rows(name)
        return None if rows is None else len(rows)

    info = [float(r["value"]) for r in rd.rows("info.jsonl") or [] if isinstance(r.get("value"), int | float)]
    train_r = valid_rewards(rd.rows("train_scores.jsonl"))
    pairs = rd.rows("pairs.jsonl")
    margins = [
        float(p["chosen_reward"]) - float(p["rejected_reward"])
        for p in pairs or []
        if isinstance(p.get("chosen_reward"), int | float)
        and isinstance(p.get("rejected_reward"), int | float)
    ]
    evolved = rd.rows("evolved.jsonl")
    train_prompts = rd.rows("train_prompts.jsonl")
    evolved_share = None
    if train_prompts:
        evolved_share = sum(1 for p in train_prompts if p.get("method")) / len(train_prompts)
    log = rd.train_log or []
    last = log[-1] if log else {}
    first = log[0] if log else {}
    scores_pi = rd.rows("train_scores.jsonl")
    return {
        "round": rd.idx,
        "prompts": count("prompts.jsonl"),
        "sampled": count("sampled.jsonl"),
        "evolved": count("evolved.jsonl"),
        "train_prompts": count("train_prompts.jsonl"),
        "evolved_share": evolved_share,
        "pairs": count("pairs.jsonl"),
        "info": reward_stats(info) if info else None,
        "train_reward": reward_stats(
            [r.get("reward") for r in scores_pi or []], [bool(r.get("failed")) for r in scores_pi or []]
        )
        if scores_pi is not None
        else None,
        "train_reward_mean": sum(train_r) / len(train_r) if train_r else None,
        "pair_margin_mean": sum(margins) / len(margins) if margins else None,
        "chosen_reward_mean": _mean([p.get("chosen_reward") for p in pairs or []]),
        "rejected_reward_mean": _mean([p.get("rejected_reward") for p in pairs or []]),
        "reward_length_pearson_train": _length_pearson(
            rd.rows("train_generations.jsonl"), rd.rows("train_scores.jsonl")
        ),
        "methods": dict(Counter(str(p.get("method")) for p in evolved or [] if p.get("method"))),
        "mean_depth": _mean([p.get("depth") for p in evolved or []]),
        "categories": dict(Counter(str(p.get("category") or "uncategorised") for p in train_prompts or [])),
        "complexity": _mean([s.get("complexity") for s in rd.rows("prompt_scores.jsonl") or []]),
        "quality": _mean([s.get("quality") for s in rd.rows("prompt_scores.jsonl") or []]),
        "train_steps": len(log) if rd.train_log is not None else None,
        "loss_first": first.get("loss"),
        "loss_last": last.get("loss"),
        "reward_accuracy_last": last.get("reward_accuracy"),
        "reward_margin_last": last.get("reward_margin"),
        "heldout": rd.heldout,
    }


def _mean(xs: Sequence[Any]) -> float | None:
    v = [float(x) for x in xs if isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)]
    return sum(v) / len(v) if v else None


def fmt(v: Any, kind: str = "num") -> str:
    """A table cell: "—" for None; kind "pct" (a fraction as a percentage), "int", or "num" (3 decimals)."""
    if v is None:
        return "—"
    if kind == "pct":
        return f"{100 * float(v):.1f}"
    if kind == "int":
        return str(int(v))
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


@dataclass
class Table:
    """Header cells and rows of text cells, rendered as a Markdown or an HTML table."""

    headers: list[str]
    rows: list[list[str]]

    def to_md(self) -> str:
        esc = [h.replace("|", "\\|") for h in self.headers]
        lines = ["| " + " | ".join(esc) + " |", "|" + "|".join(" --- " for _ in self.headers) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |")
        return "\n".join(lines)

    def to_html(self, wrap: bool = False) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        cls = ' class="text"' if wrap else ""
        return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def benchmark_name(heldouts: Sequence[dict[str, Any] | None]) -> str:
    """The instruction benchmark(s) the held-out numbers measure: "IFEval" unless they say otherwise."""
    names = set()
    for h in heldouts:
        ife = h.get("ifeval") if isinstance(h, dict) else None
        if isinstance(ife, dict) and isinstance(ife.get("benchmark"), str):
            names.add(ife["benchmark"])
    return names.pop() if len(names) == 1 else ("IFEval/IFBench" if names else "IFEval")


def heldout_columns(
    bench: str, cols: Sequence[tuple[str, str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """(label, dotted key, kind) of the held-out metrics, "IFEval" in the labels replaced by `bench`."""
    return [(c.replace("IFEval", bench), k, kind) for c, k, kind in (cols or HELDOUT_COLUMNS)]


def get_dotted(d: dict[str, Any] | None, dotted: str) -> Any:
    """`d["a"]["b"]` for "a.b"; None where a level is missing or not a mapping."""
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def delta(h: dict[str, Any], base: dict[str, Any] | None, key: str, kind: str) -> str:
    """The signed difference of `key` between `h` and `base` as a cell ("—" when either is not a number)."""
    a, b = get_dotted(h, key), get_dotted(base, key)
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return "—"
    d = float(a) - float(b)
    if kind == "int":
        return f"{d:+.0f}"
    return f"{100 * d:+.1f}" if kind == "pct" else f"{d:+.3f}"


# held-out keys with a 95% interval in eval.json's "intervals" (and their per-prompt name for paired deltas)
INTERVAL_KEYS = {
    "mean_reward": ("mean_reward", "reward"),
    "ifeval.prompt_strict": ("prompt_strict", "prompt_strict"),
    "ifeval.prompt_loose": ("prompt_loose", "prompt_loose"),
    "ifeval.inst_strict": ("inst_strict", None),
    "ifeval.inst_loose": ("inst_loose", None),
}


def _num(v: float, kind: str, signed: bool = False) -> str:
    if kind == "pct":
        return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def cell_with_interval(h: dict[str, Any] | None, key: str, kind: str) -> str:
    """`fmt` of the value, followed by its 95% interval "[lo, hi]" when eval.json records one."""
    cell = fmt(get_dotted(h, key), kind)
    iv = get_dotted(h, f"intervals.{INTERVAL_KEYS[key][0]}") if key in INTERVAL_KEYS else None
    if cell == "—" or not isinstance(iv, dict) or iv.get("lo") is None:
        return cell
    return f"{cell} [{_num(iv['lo'], kind)}, {_num(iv['hi'], kind)}]"


def paired_delta(h: dict[str, Any], base: dict[str, Any] | None, key: str, kind: str) -> str:
    """The difference from `base` paired by prompt, with its 95% bootstrap interval and a "*" when the interval
    excludes no change; the plain `delta` when eval.json has no per-prompt numbers (older runs)."""
    from evarl.eval.stats import paired_difference

    per = INTERVAL_KEYS.get(key, (None, None))[1]
    a, b = get_dotted(h, "per_prompt"), get_dotted(base, "per_prompt")
    if per is None or not isinstance(a, dict) or not isinstance(b, dict):
        return delta(h, base, key, kind)
    na = {k: v[per] for k, v in a.items() if isinstance(v, dict) and v.get(per) is not None}
    nb = {k: v[per] for k, v in b.items() if isinstance(v, dict) and v.get(per) is not None}
    d = paired_difference(na, nb)
    if d["diff"] is None:
        return "—"
    if d["lo"] is None:
        return _num(d["diff"], kind, True)
    star = "*" if d["excludes_zero"] else ""
    return f"{_num(d['diff'], kind, True)} [{_num(d['lo'], kind, True)}, {_num(d['hi'], kind, True)}]{star}"


def stage_counts(counts: dict[str, Any]) -> str:
    """Stage counts for a table cell; nested counts (e.g. filter drops) show only their non-zero entries."""
    parts = []
    for k, v in sorted(counts.items()):
        if isinstance(v, dict):
            inner = ", ".join(f"{a} {b}" for a, b in sorted(v.items()) if b)
            parts.append(f"{k}=({inner})" if inner else f"{k}=()")
        else:
            parts.append(f"{k}={fmt(v) if isinstance(v, float) else v}")
    return ", ".join(parts) or "—"


def manifest_stages(run: RunData) -> dict[str, Any]:
    """manifest.json's `stages` mapping ({} when the manifest is missing or malformed)."""
    st = (run.manifest or {}).get("stages")
    return st if isinstance(st, dict) else {}


def heldout_table(run: RunData) -> Table | None:
    """Held-out metrics per round; round 0 is the base policy, Δ columns are against it."""
    rows = []
    base = run.rounds.get(0).heldout if 0 in run.rounds else None
    columns = heldout_columns(benchmark_name([x.heldout for x in run.rounds.values()]))
    for r in sorted(run.rounds):
        h = run.rounds[r].heldout
        if h is None:
            continue
        label = "0 (base θ_0)" if r == 0 else str(r)
        cells = [label] + [cell_with_interval(h, k, kind) for _, k, kind in columns]
        cells.append(paired_delta(h, base, "mean_reward", "num") if r else "")
        cells.append(paired_delta(h, base, "ifeval.prompt_loose", "pct") if r else "")
        rows.append(cells)
    if not rows:
        return None
    headers = ["round"] + [c for c, _, _ in columns] + ["Δ reward vs base", "Δ prompt loose vs base"]
    return Table(headers, rows)


def scoring_table(run: RunData) -> Table | None:
    """Per round and score stage: responses scored and the share the reward could not score (a judge reply
    without a parsable score, a failed endpoint call), with its 95% interval."""
    from evarl.eval.stats import mean_interval

    rows = []
    for key, entry in sorted(manifest_stages(run).items()):
        if not key.endswith(("/score", "/train_score")) or not isinstance(entry, dict):
            continue
        counts = entry.get("counts") or {}
        n, failed = counts.get("scored"), counts.get("failed")
        if not isinstance(n, int) or not isinstance(failed, int) or n <= 0:
            continue
        iv = mean_interval([1.0] * failed + [0.0] * (n - failed))
        share = f"{100 * iv['mean']:.1f} [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"
        rows.append([key, str(n), str(failed), share])
    if not rows:
        return None
    return Table(["stage", "responses", "not scored", "not scored % [95% CI]"], rows)


def head_to_head_table(run: RunData) -> Table | None:
    """Win rates between iterates from `evarl h2h` (head_to_head.json in the run directory): both orders, a tie
    when they disagree, judge replies that did not parse counted apart (Exploring Self-Learning and Teacher-Guided
    Paradigms in LM Alignment, §4.1.2)."""
    import json

    path = run.path / "head_to_head.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    rows = []
    for c in (data or {}).get("comparisons", []):
        if not isinstance(c, dict):
            continue
        ci = c.get("win_rate_ci")
        wr = "—" if c.get("win_rate") is None else f"{c['win_rate']:.1f}"
        if ci:
            wr += f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        rows.append(
            [
                f"{c.get('model')} vs {c.get('baseline')}",
                fmt(c.get("n_total")),
                fmt(c.get("n_wins")),
                fmt(c.get("n_ties")),
                fmt(c.get("n_losses")),
                fmt(c.get("n_failed")),
                wr,
            ]
        )
    if not rows:
        return None
    headers = ["round vs round", "n", "wins", "ties", "losses", "judge failed", "win rate % [95% CI]"]
    return Table(headers, rows)


def rounds_table(run: RunData) -> Table | None:
    sums = [round_summary(run.rounds[r]) for r in sorted(run.rounds) if r > 0]
    if not sums:
        return None
    headers = [
        "round",
        "prompts (info est.)",
        "info mean",
        "sampled",
        "evolved",
        "train prompts",
        "evolved share (%)",
        "pairs",
        "train reward (π_{t-1})",
        "pair margin",
        "reward-length r (per prompt)",
        "complexity",
        "quality",
        "train steps",
        "loss first→last",
        "reward acc. (last)",
    ]
    rows = []
    for s in sums:
        loss = "—"
        if s["loss_first"] is not None or s["loss_last"] is not None:
            loss = f"{fmt(s['loss_first'])} → {fmt(s['loss_last'])}"
        rows.append(
            [
                str(s["round"]),
                fmt(s["prompts"]),
                fmt((s["info"] or {}).get("mean")),
                fmt(s["sampled"]),
                fmt(s["evolved"]),
                fmt(s["train_prompts"]),
                fmt(s["evolved_share"], "pct"),
                fmt(s["pairs"]),
                fmt(s["train_reward_mean"]),
                fmt(s["pair_margin_mean"]),
                fmt(s["reward_length_pearson_train"]),
                fmt(s["complexity"]),
                fmt(s["quality"]),
                fmt(s["train_steps"]),
                loss,
                fmt(s["reward_accuracy_last"]),
            ]
        )
    return Table(headers, rows)


def timings_table(run: RunData) -> Table | None:
    """Seconds per stage (columns) and round (rows) from manifest.json, with a total per round."""
    per_round: dict[str, dict[str, float]] = {}
    stage_names: list[str] = []
    for key, v in manifest_stages(run).items():
        if not isinstance(v, dict) or not isinstance(v.get("seconds"), int | float):
            continue
        where, _, stage = key.rpartition("/")
        where = where or "setup"
        per_round.setdefault(where, {})[stage] = float(v["seconds"])
        if stage not in stage_names:
            stage_names.append(stage)
    if not per_round:
        return None
    rows = []
    for where, st in per_round.items():
        rows.append([where] + [fmt(st.get(n)) for n in stage_names] + [f"{sum(st.values()):.1f}"])
    return Table(["round"] + stage_names + ["total (s)"], rows)


def _clip(text: Any, n: int = 240) -> str:
    t = " ".join(str(text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _prompt_text(row: dict[str, Any]) -> str:
    msgs = row.get("messages")
    if isinstance(msgs, list):
        users = [m.get("content", "") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1])
    return str(row.get("task") or row.get("prompt") or "")


def evolved_examples_table(run: RunData, per_round: int = 3) -> Table | None:
    """A few evolved prompts per round beside their parents, so a reader can judge what the creator made."""
    rows = []
    for r in sorted(run.rounds):
        rd = run.rounds[r]
        evolved = rd.rows("evolved.jsonl") or []
        if not evolved:
            continue
        parents = {
            p.get("id"): p for p in (rd.rows("sampled.jsonl") or []) + (rd.rows("prompts.jsonl") or [])
        }
        for e in evolved[:per_round]:
            parent = parents.get(e.get("parent_id"))
            rows.append(
                [
                    str(r),
                    str(e.get("method") or "—"),
                    fmt(e.get("depth")),
                    _clip(_prompt_text(parent)) if parent else "—",
                    _clip(_prompt_text(e)),
                ]
            )
    return Table(["round", "method", "depth", "parent", "evolved prompt"], rows) if rows else None


def heldout_examples_table(run: RunData, n: int = 3) -> Table | None:
    """The first held-out responses of the base policy and of the last evaluated round, with their rewards."""
    evaluated = [r for r in sorted(run.rounds) if r > 0 and run.rounds[r].rows("eval_generations.jsonl")]
    base_rows = run.rounds[0].rows("eval_generations.jsonl") if 0 in run.rounds else None
    if not evaluated or not base_rows:
        return None
    last = evaluated[-1]
    after = {
        (g.get("prompt_id"), g.get("index")): g for g in run.rounds[last].rows("eval_generations.jsonl") or []
    }
    rows = []
    for g in base_rows[:n]:
        a = after.get((g.get("prompt_id"), g.get("index")))
        if a is None:
            continue
        rows.append(
            [
                str(g.get("prompt_id")),
                _clip(g.get("text"), 300),
                fmt(g.get("reward")),
                _clip(a.get("text"), 300),
                fmt(a.get("reward")),
            ]
        )
    headers = ["prompt", "base response", "base reward", f"round {last} response", f"round {last} reward"]
    return Table(headers, rows) if rows else None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(d, sort_keys=True) if isinstance(d, list | dict) else d
    return out


def differing_config(runs: Sequence[RunData]) -> list[str]:
    """Dotted config keys whose values differ between the runs (the ablation's knobs)."""
    flats = [_flatten(r.config or {}) for r in runs if r.config is not None]
    if len(flats) < 2:
        return []
    keys = sorted({k for f in flats for k in f} - _IGNORED_CONFIG_KEYS)
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


def comparison_table(runs: Sequence[RunData]) -> Table | None:
    """Ablation-table form (eva, Tables 4-6): θ_0 first, then each run at its last evaluated round."""
    knobs = differing_config(runs)
    bench = benchmark_name([x.heldout for run in runs for x in run.rounds.values()])
    metric_cols = [c for c in heldout_columns(bench) if c[1] != "reward_std"]
    headers = ["run", "round"] + knobs + [c for c, _, _ in metric_cols]
    rows = []
    base_run = next((r for r in runs if 0 in r.rounds and r.rounds[0].heldout is not None), None)
    base = base_run.rounds[0].heldout if base_run else None
    if base_run is not None:
        rows.append(
            [f"θ_0: base ({base_run.name})", "0"]
            + ["" for _ in knobs]
            + [cell_with_interval(base, k, kind) for _, k, kind in metric_cols]
        )
    flats = {id(r): _flatten(r.config or {}) for r in runs}
    for run in runs:
        evaluated = [r for r in sorted(run.rounds) if r > 0 and run.rounds[r].heldout is not None]
        if not evaluated:
            rows.append(
                [run.name, "—"] + [fmt(flats[id(run)].get(k)) for k in knobs] + ["—"] * len(metric_cols)
            )
            continue
        last = evaluated[-1]
        h = run.rounds[last].heldout
        cells = []
        for _, k, kind in metric_cols:
            cell = cell_with_interval(h, k, kind)
            if base is not None and k in ("mean_reward", "ifeval.prompt_loose") and cell != "—":
                cell += f" ({paired_delta(h, base, k, kind)})"
            cells.append(cell)
        rows.append([run.name, str(last)] + [fmt(flats[id(run)].get(k)) for k in knobs] + cells)
    return Table(headers, rows) if rows else None
