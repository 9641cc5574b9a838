"""`evarl ablate`: the eva paper's ablations as one resumable study with honest statistics.

Ye, Agarwal, Liu, Jain, Bhupatiraju, Saadat, Gu, Kolluri, Zhang, Tan, Hannah, Kumar, Rahul, Narasimhan, Zhu
(2024), "Evolving alignment via asymmetric self-play", arXiv:2411.00062, compares, from one policy theta_1
(theta_0 after a plain DPO round on the original prompts):

* Table 2 — "+ new human prompts" (a fresh, unseen split of the original prompt pool, as many prompts as eva's
  set) against "+ eva" (creator: estimate informativeness, sample, evolve);
* Table 4 — the informativeness metric: A*_min (eva's default), A*_avg, A*_dis, uniform, 1/A*_min;
* Table 5 — sampling and evolving: weighted sample + evolve (eva), greedy + evolve, and the "no evolve" arms that
  train on the sampled informative subset itself (weighted or greedy).

A study is a folder: ``theta1/`` (the shared plain DPO round, with the base policy's held-out score) and one evarl
run directory per arm and seed (``<arm>-s<seed>/``), each a one-round run that starts from theta_1's model with
theta_1 as the DPO reference. Every arm trains on exactly ``pairs`` preference pairs (``solver.max_pairs``); an
arm-seed run that builds fewer is excluded and reported, never silently compared. Rerunning the command resumes
every run where it stopped (each is an ordinary evarl run directory).

Statistics: every cell is the mean held-out reward (and IFEval prompt-level loose accuracy where the prompts
carry constraints) over seeds and prompts with a 95% interval from a two-level bootstrap (seeds, then prompts
within a seed; :func:`evarl.eval.stats.hierarchical_bootstrap`); each arm's paired difference against eva pairs
the same seed and prompt. The plain reading says, table by table, whether the paper's ordering (eva best) is
reproduced (eva better, interval excluding zero), unresolved (interval containing zero) or reversed.

Deviations: the paper trains each arm on its full prompt set at gemma-2-9b scale with one seed and reports
AlpacaEval / Arena-Hard / MT-Bench; the study holds the pair count equal across arms (so a "no evolve" arm, which
trains on the sampled 25%, limits the count) and measures the run's own held-out reward and IFEval accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evarl.config import ConfigError, RunConfig, config_to_dict, load_config, load_yaml, validate_config


@dataclass(frozen=True)
class Arm:
    """One arm: config overrides relative to the eva arm, and the fields it is meant to vary."""

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def vary(self) -> set[str]:
        return set(self.overrides)


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("eva", "eva: A*_min, weighted sample + evolve"),
        Arm(
            "new_prompts",
            "+ new human prompts",
            {"creator.enabled": False, "creator.fresh_prompts": True},
        ),
        Arm("greedy", "greedy sample + evolve", {"creator.sampler": "greedy"}),
        Arm("no_evolve_sample", "weighted sample, no evolve", {"creator.evolve": False}),
        Arm(
            "no_evolve_greedy",
            "greedy sample, no evolve",
            {"creator.evolve": False, "creator.sampler": "greedy"},
        ),
        Arm("uniform", "uniform (no informativeness)", {"creator.metric": "uniform"}),
        Arm("inv_a_min", "1/A*_min", {"creator.metric": "inv_a_min"}),
        Arm("a_avg", "A*_avg", {"creator.metric": "a_avg"}),
        Arm("a_dis", "A*_dis", {"creator.metric": "a_dis"}),
    )
}

# the paper's tables: (title, arms in the paper's row order); eva is the arm the paper reports best in each
TABLES: list[tuple[str, list[str]]] = [
    ("Table 2: new prompts from where?", ["new_prompts", "eva"]),
    ("Table 4: informativeness metric", ["eva", "a_avg", "a_dis", "uniform", "inv_a_min"]),
    (
        "Table 5: sampling and evolving",
        ["eva", "greedy", "no_evolve_sample", "no_evolve_greedy"],
    ),
]
DEFAULT_ARMS = [
    "eva",
    "new_prompts",
    "greedy",
    "no_evolve_sample",
    "no_evolve_greedy",
    "uniform",
    "inv_a_min",
    "a_avg",
    "a_dis",
]
# fields every arm run sets itself; differences in them are part of the design, not of an arm
STUDY_FIELDS = {"name", "output_dir", "seed", "rounds", "model.path", "model.gguf_file", "eval.baseline"}


# the small setting (configs/ablation/small.yaml): the embedded SmolLM2 default at a size a 2-core CPU runs
SMALL_OVERRIDES: dict[str, Any] = {
    "task.train_prompts": 96,
    "task.heldout_prompts": 120,
    "generation.n": 4,
    "generation.max_new_tokens": 48,
    "creator.num_evolutions": 4,
    "creator.sample_fraction": 0.25,
    "creator.max_new_tokens": 64,
    "solver.epochs": 2,
    "eval.max_new_tokens": 64,
}


@dataclass
class Study:
    name: str = "eva-ablation-small"
    output_dir: str = "runs"
    config: str | None = None  # the eva arm's base run config (None = the embedded default)
    # dotted key -> value, for every run of the study
    overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL_OVERRIDES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    pairs: int = 20  # training pairs of every arm-seed run (no-evolve arms: at most 25% of 96 prompts)
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    custom_arms: dict[str, Arm] = field(default_factory=dict)
    theta1_seed: int = 0

    @property
    def dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def arm(self, name: str) -> Arm:
        return self.custom_arms.get(name) or ARMS[name]


def load_study(path: str | Path | None, overrides: list[str] | None = None) -> Study:
    """A Study from a YAML file (None = the defaults) plus ``key=value`` overrides of the study's own fields
    (``seeds=[0,1]``, ``pairs=24``) or, with an ``overrides.`` prefix, of the runs' config."""
    data = load_yaml(path) if path else {}
    where = str(path) if path else "study"
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError([f"{ov}: override must look like key=value"])
        k, raw = ov.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        if k.startswith("overrides."):
            data.setdefault("overrides", {})[k[len("overrides.") :]] = value
        else:
            data[k] = value
    known = {
        "name",
        "output_dir",
        "config",
        "overrides",
        "seeds",
        "pairs",
        "arms",
        "custom_arms",
        "theta1_seed",
    }
    errors = [
        f"{where}: {k}: unknown study field; known: {', '.join(sorted(known))}"
        for k in data
        if k not in known
    ]
    s = Study()
    for k in ("name", "output_dir", "config"):
        if k in data:
            if data[k] is not None and not isinstance(data[k], str):
                errors.append(f"{where}: {k}: expected a string, got {data[k]!r}")
            else:
                setattr(s, k, data[k])
    if s.config and path and not Path(s.config).is_absolute():
        s.config = str(Path(path).parent / s.config)
    ov = data.get("overrides", s.overrides)  # absent: the small setting's; given: replaces them
    if not isinstance(ov, dict):
        errors.append(f"{where}: overrides: expected a mapping of dotted keys to values")
    else:
        s.overrides = dict(ov)
    seeds = data.get("seeds", s.seeds)
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
    ):
        errors.append(f"{where}: seeds: expected a non-empty list of integers, got {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        errors.append(f"{where}: seeds: repeated seeds {seeds!r}")
    else:
        s.seeds = seeds
    pairs = data.get("pairs", s.pairs)
    if not isinstance(pairs, int) or isinstance(pairs, bool) or pairs < 1:
        errors.append(f"{where}: pairs: expected an integer >= 1, got {pairs!r}")
    else:
        s.pairs = pairs
    t1 = data.get("theta1_seed", s.theta1_seed)
    if not isinstance(t1, int) or isinstance(t1, bool) or t1 < 0:
        errors.append(f"{where}: theta1_seed: expected an integer >= 0, got {t1!r}")
    else:
        s.theta1_seed = t1
    custom = data.get("custom_arms", {}) or {}
    if not isinstance(custom, dict):
        errors.append(f"{where}: custom_arms: expected a mapping name -> {{overrides, vary}}")
        custom = {}
    for name, spec in custom.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("overrides", {}), dict):
            errors.append(
                f"{where}: custom_arms.{name}: expected {{overrides: {{dotted.key: value}}, vary: [...]}}"
            )
            continue
        arm = Arm(str(name), str(spec.get("label", name)), dict(spec.get("overrides", {})))
        vary = spec.get("vary", list(arm.overrides))
        if not isinstance(vary, list) or set(vary) != arm.vary:
            errors.append(
                f"{where}: custom_arms.{name}: overrides {sorted(arm.vary)} differ from the fields it is meant "
                f"to vary {vary!r}: an arm must change exactly its intended fields"
            )
        s.custom_arms[str(name)] = arm
    arms = data.get("arms", s.arms)
    if not isinstance(arms, list) or not arms:
        errors.append(f"{where}: arms: expected a non-empty list of arm names")
    else:
        unknown = [a for a in arms if a not in ARMS and a not in s.custom_arms]
        if unknown:
            errors.append(
                f"{where}: arms: unknown arms {unknown}; known: {', '.join([*ARMS, *s.custom_arms])}"
            )
        if "eva" not in arms:
            errors.append(f"{where}: arms: must include eva, the arm every other is compared against")
        s.arms = list(arms)
    if errors:
        raise ConfigError(errors)
    return s


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _config(study: Study, extra: dict[str, Any]) -> RunConfig:
    base = load_yaml(study.config) if study.config else {}
    pairs = {**study.overrides, **extra}
    return load_config(base, [f"{k}={json.dumps(v)}" for k, v in pairs.items()])


def theta1_config(study: Study) -> RunConfig:
    """The shared theta_0 -> theta_1 round: plain DPO on the original prompts, base policy evaluated too."""
    return _config(
        study,
        {
            "name": "theta1",
            "output_dir": str(study.dir),
            "seed": study.theta1_seed,
            "rounds": 1,
            "creator.enabled": False,
            "eval.enabled": True,
            "eval.baseline": True,
        },
    )


def theta1_model(study: Study) -> Path:
    return study.dir / "theta1" / "round-001" / "train" / "model"


def arm_config(study: Study, arm: str, seed: int) -> RunConfig:
    """One arm-seed run: one round from theta_1 (also its DPO reference) on exactly ``study.pairs`` pairs."""
    a = study.arm(arm)
    return _config(
        study,
        {
            "name": f"{arm}-s{seed}",
            "output_dir": str(study.dir),
            "seed": seed,
            "rounds": 1,
            "model.path": str(theta1_model(study)),
            "model.gguf_file": None,
            "eval.enabled": True,
            "eval.baseline": False,
            "solver.max_pairs": study.pairs,
            **a.overrides,
        },
    )


def check_study(study: Study) -> list[str]:
    """Problems found before any compute: bad run configs, arms that differ from eva in more than their
    intended fields, arms that cannot reach the study's pair count."""
    errors: list[str] = []
    base = theta1_config(study)
    errors += [f"theta1 run: {e}" for e in validate_config(base)]
    if not base.eval.enabled:
        errors.append("theta1 run: eval.enabled must be true: the study compares held-out numbers")
    seed = study.seeds[0]
    eva = _flat(config_to_dict(arm_config(study, "eva", seed)))
    for name in study.arms:
        cfg = arm_config(study, name, seed)
        for e in validate_config(cfg):
            if not e.startswith("model.path"):  # theta_1's model does not exist before the study runs
                errors.append(f"arm {name}: {e}")
        flat = _flat(config_to_dict(cfg))
        differ = {k for k in set(eva) | set(flat) if eva.get(k) != flat.get(k)} - STUDY_FIELDS
        extra = differ - study.arm(name).vary
        if extra:
            errors.append(
                f"arm {name}: differs from the eva arm in {sorted(extra)} besides its intended "
                f"{sorted(study.arm(name).vary) or 'nothing'}; an ablation arm must change only its own field"
            )
        bound = max_pairs_bound(cfg)
        if bound < study.pairs:
            errors.append(
                f"arm {name}: can build at most {bound} pairs (one per training prompt), fewer than "
                f"pairs={study.pairs}; lower pairs or raise task.train_prompts"
            )
    return errors


def max_pairs_bound(cfg: RunConfig) -> int:
    """At most one pair per training prompt (best/worst or best/random): the arm's training prompt count."""
    n = cfg.task.train_prompts
    c = cfg.creator
    if c.enabled and not c.evolve:
        return max(1, round(c.sample_fraction * n))
    return n


def run_study(study: Study, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) theta_1 and every arm-seed run, then aggregate and write the study's report."""
    from evarl.io import write_text
    from evarl.loop import run

    errors = check_study(study)
    if errors:
        raise ConfigError(errors)
    study.dir.mkdir(parents=True, exist_ok=True)
    write_text(study.dir / "study.yaml", yaml.safe_dump(study_to_dict(study), sort_keys=False))
    run(theta1_config(study), progress=progress)
    if not theta1_model(study).exists():
        raise ConfigError(
            [
                f"{study.dir / 'theta1'}: the theta_1 round built no pairs, so there is no theta_1 model to start from"
            ]
        )
    for seed in study.seeds:
        for arm in study.arms:
            print(f"evarl ablate: arm {arm}, seed {seed}", flush=True)
            run(arm_config(study, arm, seed), progress=progress)
    results = aggregate(study)
    write_report(study, results)
    return results


def study_to_dict(study: Study) -> dict[str, Any]:
    return {
        "name": study.name,
        "output_dir": study.output_dir,
        "config": study.config,
        "overrides": study.overrides,
        "seeds": study.seeds,
        "pairs": study.pairs,
        "arms": study.arms,
        "custom_arms": {
            k: {"label": a.label, "overrides": a.overrides} for k, a in study.custom_arms.items()
        },
        "theta1_seed": study.theta1_seed,
    }


# ---------------------------------------------------------------- aggregation (pure over the run files)


def _per_prompt(eval_json: Path) -> dict[str, dict[str, float | None]] | None:
    if not eval_json.exists():
        return None
    h = json.loads(eval_json.read_text()).get("heldout") or {}
    return h.get("per_prompt")


def _metric(pp: dict[str, dict[str, float | None]], key: str) -> dict[str, float]:
    return {k: float(v[key]) for k, v in pp.items() if v.get(key) is not None}


def aggregate(study: Study, n_boot: int = 2000) -> dict[str, Any]:
    """Per arm: cells (mean, 95% hierarchical-bootstrap interval, n seeds, n prompts) of held-out reward and
    IFEval prompt-loose accuracy, the paired difference against eva and against theta_1, and exclusions."""
    from evarl.eval.stats import hierarchical_bootstrap

    theta1 = _per_prompt(study.dir / "theta1" / "round-001" / "eval.json")
    base = _per_prompt(study.dir / "theta1" / "round-000" / "eval.json")
    runs: dict[str, dict[int, dict[str, dict[str, float | None]]]] = {}
    excluded: list[dict[str, Any]] = []
    for arm in study.arms:
        runs[arm] = {}
        for seed in study.seeds:
            d = study.dir / f"{arm}-s{seed}"
            manifest = d / "manifest.json"
            pp = _per_prompt(d / "round-001" / "eval.json")
            if pp is None or not manifest.exists():
                excluded.append({"arm": arm, "seed": seed, "reason": "not run or not finished"})
                continue
            st = json.loads(manifest.read_text())["stages"]
            pairs = st.get("round-001/pairs", {}).get("counts", {}).get("pairs", 0)
            if pairs < study.pairs:
                excluded.append(
                    {"arm": arm, "seed": seed, "reason": f"built {pairs} pairs, fewer than {study.pairs}"}
                )
                continue
            runs[arm][seed] = pp
    out: dict[str, Any] = {"pairs": study.pairs, "seeds": study.seeds, "arms": {}, "excluded": excluded}
    metrics = ["reward", "prompt_loose"]
    for arm, by_seed in runs.items():
        row: dict[str, Any] = {"label": study.arm(arm).label, "seeds": sorted(by_seed)}
        for m in metrics:
            groups = [list(_metric(pp, m).values()) for pp in by_seed.values()]
            row[m] = hierarchical_bootstrap(groups, n_boot=n_boot)
            if arm != "eva" and runs.get("eva"):
                diffs = []
                for seed, pp in by_seed.items():
                    if seed not in runs["eva"]:
                        continue
                    a, b = _metric(pp, m), _metric(runs["eva"][seed], m)
                    diffs.append([a[k] - b[k] for k in sorted(set(a) & set(b))])
                row[f"{m}_vs_eva"] = _with_verdict(hierarchical_bootstrap(diffs, n_boot=n_boot))
            if theta1:
                t1 = _metric(theta1, m)
                diffs = [[v - t1[k] for k, v in _metric(pp, m).items() if k in t1] for pp in by_seed.values()]
                row[f"{m}_vs_theta1"] = _with_verdict(hierarchical_bootstrap(diffs, n_boot=n_boot))
        out["arms"][arm] = row
    for label, pp in (("theta1", theta1), ("theta0", base)):
        if pp:
            out[label] = {
                m: hierarchical_bootstrap([list(_metric(pp, m).values())], n_boot=n_boot) for m in metrics
            }
    out["reading"] = reading(out)
    return out


def _with_verdict(d: dict[str, Any]) -> dict[str, Any]:
    if d["lo"] is None:
        d["excludes_zero"] = None
    else:
        d["excludes_zero"] = bool(d["lo"] > 0 or d["hi"] < 0)
    return d


def reading(res: dict[str, Any]) -> list[str]:
    """One plain sentence per comparison the paper makes: eva against each other arm of each table."""
    lines = []
    for title, arms in TABLES:
        for arm in arms:
            if arm == "eva" or arm not in res["arms"] or "eva" not in res["arms"]:
                continue
            d = res["arms"][arm].get("reward_vs_eva")
            if not d or d.get("mean") is None:
                continue
            span = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            if d["excludes_zero"] and d["mean"] < 0:
                verdict = "reproduced: eva is better and the interval excludes no change"
            elif d["excludes_zero"]:
                verdict = f"reversed: {arm} is better than eva and the interval excludes no change"
            else:
                verdict = "not resolved: the interval includes no change"
            lines.append(
                f"{title}: {res['arms'][arm]['label']} minus eva, held-out reward {span}; {verdict}."
            )
    return lines


# ---------------------------------------------------------------- rendering


def _cell(d: dict[str, Any] | None, signed: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "-"
    f = "{:+.3f}" if signed else "{:.3f}"
    lo, hi = d["lo"], d["hi"]
    return f"{f.format(d['mean'])} [{f.format(lo)}, {f.format(hi)}]"


def render_markdown(study: Study, res: dict[str, Any]) -> str:
    lines = [
        f"# eva ablation study `{study.name}`",
        "",
        f"Every arm: one round from the shared theta_1, exactly {study.pairs} training pairs, seeds "
        f"{study.seeds}. Cells: mean over seeds and held-out prompts with a 95% two-level bootstrap interval "
        "(seeds, then prompts); differences are paired by seed and prompt.",
        "",
    ]
    for key, name in (("theta0", "theta_0 (base policy)"), ("theta1", "theta_1 (theta_0 + one DPO round)")):
        if key in res:
            r = res[key]["reward"]
            lines.append(f"- {name}: held-out reward {_cell(r)} (n={r['n_items']} prompts)")
    lines.append("")
    for title, arms in TABLES:
        present = [a for a in arms if a in res["arms"]]
        if not present:
            continue
        lines += [
            f"## {title}",
            "",
            "| arm | seeds | held-out reward | vs eva | vs theta_1 | IFEval prompt-loose | vs eva |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for a in present:
            row = res["arms"][a]
            n = row["reward"]
            lines.append(
                f"| {row['label']} | {len(row['seeds'])} | {_cell(row['reward'])} (n={n['n_items']}) | "
                f"{_cell(row.get('reward_vs_eva'), True)} | {_cell(row.get('reward_vs_theta1'), True)} | "
                f"{_cell(row.get('prompt_loose'))} | {_cell(row.get('prompt_loose_vs_eva'), True)} |"
            )
        lines.append("")
    extra = [a for a in res["arms"] if not any(a in arms for _, arms in TABLES)]
    if extra:
        lines += ["## Other arms", "", "| arm | held-out reward | vs eva |", "| --- | --- | --- |"]
        for a in extra:
            row = res["arms"][a]
            lines.append(
                f"| {row['label']} | {_cell(row['reward'])} | {_cell(row.get('reward_vs_eva'), True)} |"
            )
        lines.append("")
    lines += ["## Reading", ""]
    lines += [f"- {s}" for s in res["reading"]] or ["- no comparison could be made"]
    if res["excluded"]:
        lines += ["", f"## Excluded ({len(res['excluded'])} arm-seed runs)", ""]
        lines += [f"- {e['arm']} seed {e['seed']}: {e['reason']}" for e in res["excluded"]]
    return "\n".join(lines) + "\n"


def write_report(study: Study, res: dict[str, Any]) -> dict[str, Path]:
    from evarl.io import write_json, write_text

    md = study.dir / "ablation.md"
    write_json(study.dir / "ablation.json", res)
    write_text(md, render_markdown(study, res))
    out = {"markdown": md, "json": study.dir / "ablation.json"}
    try:
        out["plot"] = plot(study, res)
    except Exception as e:  # noqa: BLE001  (a plotting problem never loses the table)
        print(f"evarl ablate: plot not written ({e})")
    return out


def plot(study: Study, res: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in study.arms if a in res["arms"] and res["arms"][a]["reward"]["mean"] is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(arms) + 1), 3.2))
    means = [res["arms"][a]["reward"]["mean"] for a in arms]
    los = [m - res["arms"][a]["reward"]["lo"] for a, m in zip(arms, means)]
    his = [res["arms"][a]["reward"]["hi"] - m for a, m in zip(arms, means)]
    ax.bar(
        range(len(arms)),
        means,
        yerr=[los, his],
        capsize=3,
        color=["C1" if a == "eva" else "C0" for a in arms],
    )
    if "theta1" in res:
        ax.axhline(res["theta1"]["reward"]["mean"], color="grey", ls="--", lw=1, label="theta_1")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("held-out reward (95% CI)")
    ax.set_title(f"{study.name}: {study.pairs} pairs, {len(study.seeds)} seeds", fontsize=9)
    fig.tight_layout()
    path = study.dir / "ablation.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- CLI


def cmd_ablate(ns: argparse.Namespace) -> int:
    if ns.study and "=" in ns.study:  # only overrides were given
        ns.overrides, ns.study = [ns.study, *ns.overrides], None
    study = load_study(ns.study, ns.overrides)
    if ns.check:
        errors = check_study(study)
        if errors:
            raise ConfigError(errors)
        runs = 1 + len(study.arms) * len(study.seeds)
        print(f"{ns.study or 'default study'}: ok ({runs} runs under {study.dir})")
        return 0
    if ns.report_only:
        res = aggregate(study)
    else:
        res = run_study(study, progress=not ns.quiet)
    paths = write_report(study, res)
    print(render_markdown(study, res))
    print(f"evarl ablate: {paths['markdown']}")
    return 0


def add_subcommands(sub: Any) -> None:
    p = sub.add_parser("ablate", help="the eva paper's ablation tables as one resumable study")
    p.add_argument(
        "study", nargs="?", help="study YAML (configs/ablation/*.yaml); default: the built-in study"
    )
    p.add_argument("overrides", nargs="*", help="key=value for study fields; overrides.a.b=c for the runs")
    p.add_argument("--check", action="store_true", help="validate the study and stop (no model is loaded)")
    p.add_argument("--report-only", action="store_true", help="aggregate the finished runs; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_ablate)


__all__ = [
    "ARMS",
    "TABLES",
    "Arm",
    "Study",
    "aggregate",
    "arm_config",
    "check_study",
    "load_study",
    "run_study",
]
