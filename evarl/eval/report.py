"""Run reports: a markdown summary per round, and one self-contained HTML page (+ markdown) for one or more
runs, built only from the plain files in the run directories.

What the report shows is what the eva paper (seed 001) uses as evidence that self-play works:

- held-out scores per round with round 0 = the base policy θ_0 (Tables 1-2; Figure 5's monotonic gains);
- reward distributions (held-out and training prompts) and the reward-length correlation (seed 003 Fig. 3);
- informativeness distributions per round (appendix D, Figure 9);
- prompt complexity and quality per round when `prompt_scores.jsonl` exists (appendix E, Table 7);
- the curriculum: category mix of the training prompts per round (§4.2.5, Figure 6) and the evolve-method mix;
- the solver's training curves (loss, reward margin, reward accuracy);
- for several runs, one comparison table in the form of the paper's ablation tables (Tables 4-6): a row per
  run, held-out metrics plus the config fields that differ between the runs.

A report is never the thing that crashes: missing rounds, files or fields (a run still in progress, a killed
one) are skipped and listed as notes at the top of the page. Plots are written as PNG files under
`<out>/plots/` and embedded in the HTML as base64, so the page opens anywhere with no other file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evarl.eval.io import write_json, write_text
from evarl.eval.stats import per_prompt_pearson, reward_stats

ROUND_RE = re.compile(r"^round-(\d{3,})$")
IFEVAL_KEYS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")
TRAIN_KEYS = ("loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp", "lr")
ROUND_FILES = (
    "prompts.jsonl",
    "generations.jsonl",
    "scores.jsonl",
    "info.jsonl",
    "sampled.jsonl",
    "evolved.jsonl",
    "train_prompts.jsonl",
    "train_generations.jsonl",
    "train_scores.jsonl",
    "pairs.jsonl",
    "prompt_scores.jsonl",
    "eval_generations.jsonl",
)
_IGNORED_CONFIG_KEYS = {"name", "output_dir"}


# ---------------------------------------------------------------- loading (tolerant)


@dataclass
class RoundData:
    idx: int
    path: Path
    files: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    train_log: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, name: str) -> list[dict[str, Any]] | None:
        return self.files.get(name)

    @property
    def heldout(self) -> dict[str, Any] | None:
        h = (self.eval or {}).get("heldout")
        return h if isinstance(h, dict) else None


@dataclass
class RunData:
    name: str
    path: Path
    config: dict[str, Any] | None
    manifest: dict[str, Any] | None
    rounds: dict[int, RoundData]
    notes: list[str]


def _read_jsonl_tolerant(path: Path, notes: list[str]) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    rows = []
    bad = 0
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    if bad == 1:
                        notes.append(f"{path.parent.name}/{path.name}:{i}: invalid JSON line skipped")
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
    except OSError as e:
        notes.append(f"{path}: unreadable ({e})")
        return None
    if bad > 1:
        notes.append(f"{path.parent.name}/{path.name}: {bad} invalid JSON lines skipped in all")
    return rows


def _read_json_tolerant(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.parent.name}/{path.name}: unreadable ({e}); skipped")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path.parent.name}/{path.name}: not a JSON object; skipped")
        return None
    return obj


def load_run(run_dir: Path) -> RunData:
    """Everything a report needs from one run directory; problems become `notes`, never exceptions."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    if not run_dir.is_dir():
        return RunData(run_dir.name, run_dir, None, None, {}, [f"{run_dir}: not a run directory; skipped"])
    config = None
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        try:
            import yaml

            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else None
        except Exception as e:  # noqa: BLE001 - any YAML problem is a note, not a crash
            notes.append(f"config.yaml: unreadable ({type(e).__name__}); config columns skipped")
    else:
        notes.append("config.yaml missing; config columns skipped")
    manifest = _read_json_tolerant(run_dir / "manifest.json", notes)
    rounds: dict[int, RoundData] = {}
    for d in sorted(run_dir.iterdir()):
        m = ROUND_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        rd = RoundData(int(m.group(1)), d)
        for fname in ROUND_FILES:
            rd.files[fname] = _read_jsonl_tolerant(d / fname, rd.notes)
        rd.eval = _read_json_tolerant(d / "eval.json", rd.notes)
        rd.train_log = _read_jsonl_tolerant(d / "train" / "train_log.jsonl", rd.notes)
        rounds[rd.idx] = rd
        notes.extend(f"{d.name}/{n}" if not n.startswith(d.name) else n for n in rd.notes)
    planned = (config or {}).get("rounds")
    if isinstance(planned, int) and not isinstance(planned, bool):
        not_run = [t for t in range(1, planned + 1) if t not in rounds]
        if not_run:
            notes.append(
                f"round(s) {', '.join(str(t) for t in not_run)} of {planned} not run yet (no directory); skipped"
            )
    if not rounds:
        notes.append("no round-NNN directories yet")
    else:
        missing_eval = [r for r in sorted(rounds) if rounds[r].heldout is None]
        if missing_eval:
            notes.append(
                "no held-out evaluation (eval.json) for round(s) "
                + ", ".join(str(r) for r in missing_eval)
                + "; those rounds are left out of the held-out tables and plots"
            )
    name = str((config or {}).get("name") or run_dir.name)
    return RunData(name, run_dir, config, manifest, rounds, notes)


# ---------------------------------------------------------------- per-round numbers (pure over loaded rows)


def _rewards(rows: list[dict[str, Any]] | None, key: str = "reward") -> list[float]:
    out = []
    for r in rows or []:
        v = r.get(key)
        if not r.get("failed") and isinstance(v, int | float) and not math.isnan(v):
            out.append(float(v))
    return out


def _length_pearson(gens: list[dict[str, Any]] | None, scores: list[dict[str, Any]] | None) -> float | None:
    """Seed 003 Fig. 3: mean over prompts of Pearson(reward, length in tokens) across each prompt's samples."""
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
    train_r = _rewards(rd.rows("train_scores.jsonl"))
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


# ---------------------------------------------------------------- tables and formatting


def _fmt(v: Any, kind: str = "num") -> str:
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


def _bench(heldouts: Sequence[dict[str, Any] | None]) -> str:
    """The instruction benchmark(s) the held-out numbers measure: "IFEval" unless they say otherwise."""
    names = set()
    for h in heldouts:
        ife = h.get("ifeval") if isinstance(h, dict) else None
        if isinstance(ife, dict) and isinstance(ife.get("benchmark"), str):
            names.add(ife["benchmark"])
    return names.pop() if len(names) == 1 else ("IFEval/IFBench" if names else "IFEval")


def _columns(bench: str, cols: Sequence[tuple[str, str, str]] | None = None) -> list[tuple[str, str, str]]:
    return [(c.replace("IFEval", bench), k, kind) for c, k, kind in (cols or HELDOUT_COLUMNS)]


def _get(d: dict[str, Any] | None, dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def heldout_table(run: RunData) -> Table | None:
    """Held-out metrics per round; round 0 is the base policy, Δ columns are against it."""
    rows = []
    base = run.rounds.get(0).heldout if 0 in run.rounds else None
    columns = _columns(_bench([x.heldout for x in run.rounds.values()]))
    for r in sorted(run.rounds):
        h = run.rounds[r].heldout
        if h is None:
            continue
        label = "0 (base θ_0)" if r == 0 else str(r)
        cells = [label] + [_fmt(_get(h, k), kind) for _, k, kind in columns]
        cells.append(_delta(h, base, "mean_reward", "num") if r else "")
        cells.append(_delta(h, base, "ifeval.prompt_loose", "pct") if r else "")
        rows.append(cells)
    if not rows:
        return None
    headers = ["round"] + [c for c, _, _ in columns] + ["Δ reward vs base", "Δ prompt loose vs base"]
    return Table(headers, rows)


def _delta(h: dict[str, Any], base: dict[str, Any] | None, key: str, kind: str) -> str:
    a, b = _get(h, key), _get(base, key)
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return "—"
    d = float(a) - float(b)
    if kind == "int":
        return f"{d:+.0f}"
    return f"{100 * d:+.1f}" if kind == "pct" else f"{d:+.3f}"


def _counts(counts: dict[str, Any]) -> str:
    """Stage counts for a table cell; nested counts (e.g. filter drops) show only their non-zero entries."""
    parts = []
    for k, v in sorted(counts.items()):
        if isinstance(v, dict):
            inner = ", ".join(f"{a} {b}" for a, b in sorted(v.items()) if b)
            parts.append(f"{k}=({inner})" if inner else f"{k}=()")
        else:
            parts.append(f"{k}={_fmt(v) if isinstance(v, float) else v}")
    return ", ".join(parts) or "—"


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
            loss = f"{_fmt(s['loss_first'])} → {_fmt(s['loss_last'])}"
        rows.append(
            [
                str(s["round"]),
                _fmt(s["prompts"]),
                _fmt((s["info"] or {}).get("mean")),
                _fmt(s["sampled"]),
                _fmt(s["evolved"]),
                _fmt(s["train_prompts"]),
                _fmt(s["evolved_share"], "pct"),
                _fmt(s["pairs"]),
                _fmt(s["train_reward_mean"]),
                _fmt(s["pair_margin_mean"]),
                _fmt(s["reward_length_pearson_train"]),
                _fmt(s["complexity"]),
                _fmt(s["quality"]),
                _fmt(s["train_steps"]),
                loss,
                _fmt(s["reward_accuracy_last"]),
            ]
        )
    return Table(headers, rows)


def _stages(run: RunData) -> dict[str, Any]:
    st = (run.manifest or {}).get("stages")
    return st if isinstance(st, dict) else {}


def timings_table(run: RunData) -> Table | None:
    """Seconds per stage (columns) and round (rows) from manifest.json, with a total per round."""
    per_round: dict[str, dict[str, float]] = {}
    stage_names: list[str] = []
    for key, v in _stages(run).items():
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
        rows.append([where] + [_fmt(st.get(n)) for n in stage_names] + [f"{sum(st.values()):.1f}"])
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
                    _fmt(e.get("depth")),
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
                _fmt(g.get("reward")),
                _clip(a.get("text"), 300),
                _fmt(a.get("reward")),
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
    """Ablation-table form (seed 001 Tables 4-6): θ_0 first, then each run at its last evaluated round."""
    knobs = differing_config(runs)
    bench = _bench([x.heldout for run in runs for x in run.rounds.values()])
    metric_cols = [c for c in _columns(bench) if c[1] != "reward_std"]
    headers = ["run", "round"] + knobs + [c for c, _, _ in metric_cols]
    rows = []
    base_run = next((r for r in runs if 0 in r.rounds and r.rounds[0].heldout is not None), None)
    base = base_run.rounds[0].heldout if base_run else None
    if base_run is not None:
        rows.append(
            [f"θ_0: base ({base_run.name})", "0"]
            + ["" for _ in knobs]
            + [_fmt(_get(base, k), kind) for _, k, kind in metric_cols]
        )
    flats = {id(r): _flatten(r.config or {}) for r in runs}
    for run in runs:
        evaluated = [r for r in sorted(run.rounds) if r > 0 and run.rounds[r].heldout is not None]
        if not evaluated:
            rows.append(
                [run.name, "—"] + [_fmt(flats[id(run)].get(k)) for k in knobs] + ["—"] * len(metric_cols)
            )
            continue
        last = evaluated[-1]
        h = run.rounds[last].heldout
        cells = []
        for _, k, kind in metric_cols:
            cell = _fmt(_get(h, k), kind)
            if base is not None and k in ("mean_reward", "ifeval.prompt_loose") and cell != "—":
                cell += f" ({_delta(h, base, k, kind)})"
            cells.append(cell)
        rows.append([run.name, str(last)] + [_fmt(flats[id(run)].get(k)) for k in knobs] + cells)
    return Table(headers, rows) if rows else None


# ---------------------------------------------------------------- plots


@dataclass
class Plot:
    name: str  # file stem under plots/
    title: str
    png: bytes


def _run_plots(run: RunData, slug: str) -> list[Plot]:
    from evarl.eval import plots

    out: list[Plot] = []
    rounds = sorted(run.rounds)

    def add(name: str, title: str, make: Any) -> None:
        try:
            png = plots.to_png(make())
        except Exception as e:  # noqa: BLE001 - a bad figure is a note, not a crash
            run.notes.append(f"plot {name}: skipped ({type(e).__name__}: {e})")
            return
        out.append(Plot(f"{slug}-{name}", title, png))

    held = {r: run.rounds[r].heldout for r in rounds if run.rounds[r].heldout is not None}
    if held:
        series: dict[str, dict[str, list[tuple[int, float]]]] = {}
        bench = _bench(list(held.values()))
        for label, key in [
            ("mean held-out reward", "mean_reward"),
            (f"{bench} prompt-level loose", "ifeval.prompt_loose"),
            (f"{bench} instruction-level loose", "ifeval.inst_loose"),
            ("mean length (tokens)", "mean_length"),
        ]:
            pts = [(r, float(_get(h, key))) for r, h in held.items() if isinstance(_get(h, key), int | float)]
            if pts:
                series[label] = {run.name: pts}
        if series:
            add(
                "heldout",
                "Held-out scores per round (round 0 = base policy)",
                lambda: plots.heldout_curves(series),
            )
    ev = {r: _rewards(run.rounds[r].rows("eval_generations.jsonl")) for r in rounds}
    ev = {r: v for r, v in ev.items() if v}
    if ev:
        add(
            "heldout-rewards",
            "Held-out reward distribution per round",
            lambda: plots.distributions_by_round(ev, "held-out rewards", "reward"),
        )
    tr = {r: _rewards(run.rounds[r].rows("train_scores.jsonl")) for r in rounds}
    tr = {r: v for r, v in tr.items() if v}
    if tr:
        add(
            "train-rewards",
            "Reward distribution of π_{t-1} on each round's training prompts",
            lambda: plots.distributions_by_round(tr, "training-prompt rewards", "reward"),
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
            lambda: plots.histograms_by_round(info, "informativeness info(x)", "info(x)"),
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
            lambda: plots.means_by_round(cq, "prompt complexity / quality (1-5)", "mean score"),
        )
    cats = {r: s["categories"] for r, s in sums.items() if s["categories"]}
    if cats:
        add(
            "curriculum",
            "Curriculum: category mix of the training prompts (seed 001 Fig. 6)",
            lambda: plots.stacked_shares(cats, "category share of training prompts"),
        )
    methods = {r: s["methods"] for r, s in sums.items() if s["methods"]}
    if methods:
        add(
            "evolve-methods",
            "Evolve-method mix of the evolved prompts",
            lambda: plots.stacked_shares(methods, "evolve method share"),
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
            lambda: plots.training_curves(steps, TRAIN_KEYS, bounds),
        )
    return out


def _compare_plot(runs: Sequence[RunData]) -> Plot | None:
    from evarl.eval import plots

    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    bench = _bench([x.heldout for run in runs for x in run.rounds.values()])
    for label, key in [
        ("mean held-out reward", "mean_reward"),
        (f"{bench} prompt-level loose", "ifeval.prompt_loose"),
    ]:
        per_run = {}
        for run in runs:
            pts = [
                (r, float(_get(run.rounds[r].heldout, key)))
                for r in sorted(run.rounds)
                if isinstance(_get(run.rounds[r].heldout, key), int | float)
            ]
            if pts:
                per_run[run.name] = pts
        if per_run:
            series[label] = per_run
    if not series:
        return None
    try:
        png = plots.to_png(plots.heldout_curves(series))
    except Exception as e:  # noqa: BLE001 - a bad figure is a note, not a crash
        runs[0].notes.append(f"plot compare-heldout: skipped ({type(e).__name__}: {e})")
        return None
    return Plot("compare-heldout", "Held-out scores per round, all runs", png)


# ---------------------------------------------------------------- outputs


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def write_round_markdown(run_dir: Path, round_idx: int) -> Path:
    """round-00t/report.md: stage status, prompts, pairs, reward before/after, held-out vs base and previous."""
    run = load_run(Path(run_dir))
    rdir = Path(run_dir) / f"round-{round_idx:03d}"
    rd = run.rounds.get(round_idx) or RoundData(round_idx, rdir)
    s = round_summary(rd)
    lines = [f"# {run.name}: round {round_idx}", ""]
    stages = {
        k.split("/", 1)[1]: v
        for k, v in _stages(run).items()
        if isinstance(v, dict) and k.startswith(f"round-{round_idx:03d}/")
    }
    if stages:
        t = Table(
            ["stage", "status", "seconds", "counts"],
            [
                [
                    k,
                    str(v.get("status", "—")),
                    _fmt(v.get("seconds")),
                    _counts(v.get("counts") or {}),
                ]
                for k, v in stages.items()
            ],
        )
        lines += ["## Stages", "", t.to_md(), ""]
    lines += ["## Creator", ""]
    lines.append(f"- prompts whose informativeness was estimated: {_fmt(s['prompts'])}")
    if s["info"]:
        i = s["info"]
        lines.append(
            f"- informativeness info(x): mean {_fmt(i['mean'])}, median {_fmt(i['median'])}, "
            f"max {_fmt(i['max'])} (n={i['n']})"
        )
    lines.append(f"- sampled for evolving: {_fmt(s['sampled'])}; evolved prompts kept: {_fmt(s['evolved'])}")
    if s["methods"]:
        lines.append("- evolve methods: " + ", ".join(f"{k} {v}" for k, v in sorted(s["methods"].items())))
    if s["mean_depth"] is not None:
        lines.append(f"- mean evolution depth: {_fmt(s['mean_depth'])}")
    lines.append(
        f"- training prompts: {_fmt(s['train_prompts'])} (evolved share {_fmt(s['evolved_share'], 'pct')} %)"
    )
    if s["categories"]:
        lines.append("- categories: " + ", ".join(f"{k} {v}" for k, v in sorted(s["categories"].items())))
    if s["complexity"] is not None or s["quality"] is not None:
        lines.append(f"- prompt complexity {_fmt(s['complexity'])}, quality {_fmt(s['quality'])} (1-5)")
    lines += ["", "## Solver", ""]
    tr = s["train_reward"]
    if tr:
        lines.append(
            f"- reward of π_{{t-1}} on the training prompts: mean {_fmt(tr['mean'])} ± {_fmt(tr['std'])} "
            f"(n={tr['n']}, failed {tr['failed']})"
        )
    lines.append(
        f"- pairs: {_fmt(s['pairs'])}; chosen reward {_fmt(s['chosen_reward_mean'])}, rejected reward "
        f"{_fmt(s['rejected_reward_mean'])}, mean margin {_fmt(s['pair_margin_mean'])}"
    )
    if s["reward_length_pearson_train"] is not None:
        lines.append(
            f"- reward-length Pearson r per prompt (mean): {_fmt(s['reward_length_pearson_train'])} (seed 003 Fig. 3)"
        )
    if s["train_steps"] is not None:
        lines.append(
            f"- training: {s['train_steps']} steps, loss {_fmt(s['loss_first'])} → {_fmt(s['loss_last'])}, "
            f"last reward accuracy {_fmt(s['reward_accuracy_last'])}, last margin {_fmt(s['reward_margin_last'])}"
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
        for label, key, kind in _columns(_bench([base, prev, cur])):
            row = [label] + [_fmt(_get(h, key), kind) for _, h in cols]
            row.append(_delta(cur, base, key, kind) if cur is not None and base is not None else "—")
            rows.append(row)
        lines.append(Table(["metric"] + [c for c, _ in cols] + ["Δ vs base"], rows).to_md())
    if rd.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rd.notes]
    rdir.mkdir(parents=True, exist_ok=True)
    return write_text(rdir / "report.md", "\n".join(lines) + "\n")


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


def build_report(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Write out_dir/report.html (self-contained), out_dir/report.md, out_dir/plots/*.png, out_dir/summary.json.

    Returns {"html", "markdown", "summary", "plots": [paths], "runs": [names], "notes": [...]}.
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
        per_run_sections.append((run, _run_plots(run, slug)))
    cp = _compare_plot(runs) if len(runs) > 1 else None
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
            ("Stage timings (seconds, from manifest.json)", timings_table(run)),
        )
        for title, t in tables:
            if t is None:
                continue
            md += ["", f"### {title}", "", t.to_md()]
            body += [f"<h3>{html.escape(title)}</h3>", t.to_html()]
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
    summary = {
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
    summary_path = write_json(out_dir / "summary.json", summary)
    return {
        "html": html_path,
        "markdown": md_path,
        "summary": summary_path,
        "plots": plot_paths,
        "runs": [r.name for r in runs],
        "notes": all_notes,
    }


def _rounds_str(run: RunData) -> str:
    return ", ".join(str(r) for r in sorted(run.rounds)) or "none"


def _figure_html(p: Plot) -> str:
    b64 = base64.b64encode(p.png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(p.title)}" data-plot="{html.escape(p.name)}" '
        f'src="data:image/png;base64,{b64}"><figcaption>{html.escape(p.title)} '
        f"(<code>plots/{html.escape(p.name)}.png</code>)</figcaption></figure>"
    )


__all__ = [
    "RoundData",
    "RunData",
    "Table",
    "build_report",
    "comparison_table",
    "differing_config",
    "heldout_table",
    "load_run",
    "round_summary",
    "rounds_table",
    "timings_table",
    "write_round_markdown",
]
