"""`evarl h2h RUN_DIR`: head-to-head win rates between the iterates of a run, judged in both orders.

Paper: "Exploring Self-Learning and Teacher-Guided Paradigms in LM Alignment", §4.1.2 and Figures 5-6: the models
of each iteration are compared head to head on the held-out prompts with a strong judge (the paper: GPT-4 turbo),
"in both orders", a disagreement between the two orders being a tie.

Every pair of iterates (round j against round i < j; round 0 is the base policy) is compared on the held-out
outputs the run already wrote (`round-00t/eval_generations.jsonl`, greedy by default), prompt by prompt, with the
AlpacaEval-style pairwise prompt and the both-orders protocol of :mod:`evarl.eval.winrate`: both verdicts for the
later iterate = win, both for the earlier = loss, disagreement = tie; a verdict that does not parse is counted in
`n_failed` and left out. Each comparison reports n, wins / ties / losses, the win rate in percent with its
standard error and a seeded 95% bootstrap interval, and the length-controlled win rate. Results go to
`RUN_DIR/head_to_head.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evarl.eval.stats import bootstrap_ci
from evarl.eval.winrate import judge_pairwise, summarize_judgements
from evarl.generation.base import Generator
from evarl.io import DataError, iter_jsonl, write_json

OUT_FILE = "head_to_head.json"


def iterate_outputs(run_dir: Path) -> dict[int, dict[str, str]]:
    """round -> {prompt id: held-out output (sample 0)} for every round with held-out generations."""
    out: dict[int, dict[str, str]] = {}
    for d in sorted(run_dir.glob("round-[0-9][0-9][0-9]")):
        f = d / "eval_generations.jsonl"
        if f.exists():
            out[int(d.name[-3:])] = {
                row["prompt_id"]: row["text"] for _, row in iter_jsonl(f) if row.get("index", 0) == 0
            }
    return out


def user_text(messages: list[dict[str, str]]) -> str:
    """The instruction a judge sees: the last user turn (the held-out prompts are single-turn)."""
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")


def check_run_dir(run_dir: Path) -> dict[int, dict[str, str]]:
    """The iterates' outputs of `run_dir`, or a DataError when it is not a run with two evaluated iterates."""
    held = run_dir / "heldout_prompts.jsonl"
    if not held.exists():
        raise DataError(f"{held}: missing; is {run_dir} an evarl run directory?")
    outs = iterate_outputs(run_dir)
    if len(outs) < 2:
        raise DataError(
            f"{run_dir}: head-to-head needs held-out outputs of at least two iterates (round-00t/"
            f"eval_generations.jsonl), found {len(outs)}; run with eval.enabled (and eval.baseline for round 0)"
        )
    return outs


def head_to_head(
    run_dir: Path, judge: Generator, n_boot: int = 1000, seed: int = 0, template: str | None = None
) -> dict[str, Any]:
    """Win rates of every later iterate against every earlier one (see the module docstring)."""
    run_dir = Path(run_dir)
    outs = check_run_dir(run_dir)
    held = run_dir / "heldout_prompts.jsonl"
    instructions = {row["id"]: user_text(row["messages"]) for _, row in iter_jsonl(held)}
    rounds = sorted(outs)
    comparisons = []
    for j in rounds:
        for i in [r for r in rounds if r < j]:
            ids = [p for p in instructions if p in outs[i] and p in outs[j]]
            judged = judge_pairwise(
                judge,
                [instructions[p] for p in ids],
                [outs[j][p] for p in ids],
                [outs[i][p] for p in ids],
                ids=ids,
                template=template,
            )
            s = summarize_judgements(judged, n_boot=n_boot, seed=seed)
            ties = [1.0 if j_.preference == 0.5 else 0.0 for j_ in judged if j_.preference is not None]
            ci = bootstrap_ci(ties, n_boot=n_boot, seed=seed)
            s["tie_rate_ci"] = None if ci is None else list(ci)
            comparisons.append({"model": j, "baseline": i, **s, "items": [x.to_dict() for x in judged]})
    result = {
        "run_dir": str(run_dir),
        "judge": getattr(judge, "name", str(judge)),
        "comparisons": comparisons,
    }
    write_json(run_dir / OUT_FILE, result)
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = ["round vs round   n   win  tie  loss  failed  win rate % [95% CI]"]
    for c in result["comparisons"]:
        ci = c["win_rate_ci"]
        wr = "-" if c["win_rate"] is None else f"{c['win_rate']:.1f}"
        iv = "" if not ci else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
        lines.append(
            f"{c['model']:>5} vs {c['baseline']:<5} {c['n_total']:>4} {c['n_wins']:>4} {c['n_ties']:>4} "
            f"{c['n_losses']:>5} {c['n_failed']:>7}  {wr}{iv}"
        )
    return "\n".join(lines)


def cmd_h2h(ns: argparse.Namespace) -> int:
    from evarl.config import ConfigError

    if bool(ns.judge) == bool(ns.judge_endpoint):
        raise ConfigError(["--judge / --judge-endpoint: give exactly one (a local model, or an endpoint)"])
    check_run_dir(Path(ns.run_dir))  # before any judge is loaded
    if ns.judge_endpoint:
        from evarl.generation.openai_api import OpenAIGenerator

        if not ns.judge_model:
            raise ConfigError(["--judge-model: the model name served at --judge-endpoint is required"])
        judge: Generator = OpenAIGenerator(
            ns.judge_endpoint, ns.judge_model, api_key_env=ns.api_key_env, raise_on_error=False
        )
    else:
        from evarl.generation.hf import HFGenerator
        from evarl.models.loading import resolve_model_path

        judge = HFGenerator.from_path(resolve_model_path(ns.judge), batch_size=ns.batch_size)
    template = None
    if ns.judge_template:
        from evarl.io import load_template

        template = load_template(ns.judge_template, "eval", ("instruction", "output_a", "output_b"))
    result = head_to_head(Path(ns.run_dir), judge, ns.bootstrap, ns.seed, template)
    print(format_table(result))
    print(f"evarl h2h: {Path(ns.run_dir) / OUT_FILE}", file=sys.stderr)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add `h2h` to the `evarl` parser (called by evarl.cli.build_parser)."""
    h = subparsers.add_parser(
        "h2h",
        help="head-to-head win rates between a run's iterates (both orders, ties when they disagree)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    h.add_argument("run_dir", help="a run directory (runs/<name>) with held-out outputs per round")
    h.add_argument("--judge", help='judge model directory or "embedded" (local transformers judge)')
    h.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge")
    h.add_argument("--judge-model", help="judge model name at --judge-endpoint")
    h.add_argument("--api-key-env", default="OPENAI_API_KEY")
    h.add_argument(
        "--judge-template", help="pairwise template file (slots {instruction} {output_a} {output_b})"
    )
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(fn=cmd_h2h)


__all__ = ["head_to_head", "iterate_outputs"]
