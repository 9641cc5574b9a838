"""`evarl eval` and `evarl report`.

`evarl eval` evaluates one model (a local path, "embedded", or an OpenAI-compatible endpoint) on a prompt file:

- `--format default|ifeval`: held-out evaluation (`evaluate_heldout`): reward under `--reward` (default
  `verifier`) and IFEval's four accuracies from the prompts' verifiable constraints;
- `--format alpaca|arena`: the model's outputs in AlpacaEval format, and with `--baseline-outputs` and a
  `--judge`, the pairwise win rate and the length-controlled win rate (`evarl.eval.winrate`);
- `--format mtbench`: two-turn answers, and with a `--judge`, MT-Bench 1-10 grades per turn and category.

`evarl report RUN_DIR [RUN_DIR ...]` writes the HTML + markdown report of one run, or the comparison of several.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evarl.config import ConfigError, EvalConfig
from evarl.eval.io import (
    FORMATS,
    load_prompts,
    load_template,
    read_alpaca,
    read_mtbench,
    write_json,
    write_jsonl,
)
from evarl.generation.base import Generator, SamplingParams


def add_subcommands(subparsers: Any) -> None:
    """Add `eval` and `report` to the `evarl` parser (called by evarl.cli.build_parser)."""
    defaults = EvalConfig()
    e = subparsers.add_parser(
        "eval",
        help="evaluate a model: held-out reward + IFEval, win rate vs a baseline, MT-Bench grades",
        description="\n\n".join(__doc__.split("\n\n")[1:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = e.add_argument_group("model under evaluation")
    m.add_argument("--model", default="embedded", help='model directory, hub id on disk, or "embedded"')
    m.add_argument("--backend", choices=["hf", "openai"], default="hf")
    m.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N"
    )
    m.add_argument("--endpoint", help="OpenAI-compatible base URL (…/v1) for --backend openai")
    m.add_argument("--endpoint-model", help="model name sent to the endpoint (default: --model)")
    m.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    m.add_argument("--outputs", help="use these model outputs (AlpacaEval format) instead of generating")
    d = e.add_argument_group("data")
    d.add_argument("--prompts", required=True, help="prompt file (JSONL; AlpacaEval JSON arrays too)")
    d.add_argument("--format", choices=FORMATS, default="default", dest="fmt")
    d.add_argument("--limit", type=int, help="only the first N prompts")
    d.add_argument("--baseline-outputs", help="baseline outputs, AlpacaEval format (instruction, output)")
    j = e.add_argument_group("judge")
    j.add_argument("--judge", help='judge model directory or "embedded" (local transformers judge)')
    j.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge")
    j.add_argument("--judge-model", help="judge model name at --judge-endpoint")
    j.add_argument("--judge-template", help="template file replacing the shipped one (pairwise / turn 1)")
    j.add_argument("--judge-template-turn2", help="MT-Bench turn-2 template file")
    j.add_argument("--judge-max-new-tokens", type=int, help="judge reply budget (pairwise 16, MT-Bench 256)")
    r = e.add_argument_group("reward and sampling")
    r.add_argument(
        "--reward", help="reward source(s), comma-separated (default: verifier for default/ifeval)"
    )
    r.add_argument("--reward-model", help="model path for classifier / pairwise / judge reward sources")
    r.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    r.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for win-rate intervals")
    e.add_argument("--out", required=True, help="output directory")
    e.set_defaults(fn=cmd_eval)

    rp = subparsers.add_parser("report", help="HTML + markdown report of one run, or a comparison of several")
    rp.add_argument("run_dirs", nargs="+", help="run directories (runs/<name>)")
    rp.add_argument("--out", help="output directory (default: the run directory, or runs/report-compare)")
    rp.set_defaults(fn=cmd_report)


# ---------------------------------------------------------------- helpers


def _generator(
    model: str | None,
    backend: str,
    endpoint: str | None,
    endpoint_model: str | None,
    api_key_env: str,
    batch_size: int,
    for_judge: bool = False,
    device: str = "auto",
) -> Generator:
    if backend == "openai" or endpoint:
        if not endpoint:
            raise ConfigError(["--endpoint: required with --backend openai"])
        from evarl.generation.openai_api import OpenAIGenerator

        name = endpoint_model or model
        if not name or name == "embedded":
            raise ConfigError(
                ["--endpoint-model / --judge-model: the model name served at the endpoint is required"]
            )
        # a judge's endpoint error becomes an unparsable verdict (counted as a failure), not a crash
        return OpenAIGenerator(endpoint, name, api_key_env=api_key_env, raise_on_error=not for_judge)
    from evarl.dist import resolve_device
    from evarl.generation.hf import HFGenerator
    from evarl.models.loading import resolve_model_path

    return HFGenerator.from_path(
        resolve_model_path(model or "embedded"), batch_size=batch_size, device=resolve_device(device)
    )


def _judge(ns: argparse.Namespace) -> Generator | None:
    if ns.judge_endpoint:
        return _generator(
            ns.judge_model, "openai", ns.judge_endpoint, ns.judge_model, ns.api_key_env, 8, True
        )
    if ns.judge:
        return _generator(ns.judge, "hf", None, None, ns.api_key_env, ns.batch_size, True, ns.device)
    return None


def _reward(names: str, reward_model: str | None, policy: Generator | None, device: str = "auto") -> Any:
    from evarl.config import RewardConfig, RewardSourceConfig

    sources = [RewardSourceConfig(name=n.strip(), model=reward_model) for n in names.split(",") if n.strip()]
    if not sources:
        raise ConfigError(["--reward: no reward source named"])
    try:
        from evarl.rewards import build_reward
    except ImportError:  # rewards package unavailable: only the verifier can be built
        if [s.name for s in sources] != ["verifier"]:
            raise ConfigError(["--reward: only 'verifier' is available in this install"]) from None
        from evarl.rewards.verifier import VerifierReward

        return VerifierReward()
    try:
        from evarl.dist import resolve_device

        return build_reward(RewardConfig(sources=sources), policy=policy, device=resolve_device(device))
    except (ValueError, KeyError) as e:
        raise ConfigError([f"--reward: {e}"]) from e


def _params(ns: argparse.Namespace) -> SamplingParams:
    return SamplingParams(1, ns.temperature, ns.top_p, ns.max_new_tokens, ns.seed)


def _model_name(ns: argparse.Namespace) -> str:
    return ns.endpoint_model or ns.model


# ---------------------------------------------------------------- commands


def cmd_eval(ns: argparse.Namespace) -> int:
    out = Path(ns.out)
    prompts = load_prompts(ns.prompts, ns.fmt)
    if ns.limit is not None:
        prompts = prompts[: ns.limit]
    if not prompts:
        raise ConfigError([f"--prompts: {ns.prompts} holds no prompts"])
    if ns.fmt == "mtbench" and (ns.baseline_outputs or ns.outputs):
        raise ConfigError(["--baseline-outputs / --outputs: not used with --format mtbench"])
    if ns.fmt in ("default", "ifeval") and (
        ns.baseline_outputs or ns.outputs or ns.judge or ns.judge_endpoint
    ):
        raise ConfigError(
            [
                f"--baseline-outputs / --outputs / --judge: not used with --format {ns.fmt} (use alpaca or arena)"
            ]
        )
    if ns.baseline_outputs and not (ns.judge or ns.judge_endpoint):
        raise ConfigError(["--baseline-outputs: a win rate needs a --judge or --judge-endpoint"])
    if ns.fmt in ("alpaca", "arena") and (ns.judge or ns.judge_endpoint) and not ns.baseline_outputs:
        raise ConfigError(["--judge: a pairwise win rate needs --baseline-outputs"])
    if ns.fmt in ("default", "ifeval"):
        result = _eval_heldout(ns, prompts, out)
    elif ns.fmt == "mtbench":
        result = _eval_mtbench(ns, out)
    else:
        result = _eval_pairwise(ns, prompts, out)
    write_json(out / "summary.json", result)
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"evarl eval: results in {out}", file=sys.stderr)
    return 0


def _eval_heldout(ns: argparse.Namespace, prompts: list, out: Path) -> dict[str, Any]:
    from evarl.eval.heldout import evaluate_heldout

    gen = _generator(
        ns.model, ns.backend, ns.endpoint, ns.endpoint_model, ns.api_key_env, ns.batch_size, device=ns.device
    )
    reward = _reward(ns.reward or "verifier", ns.reward_model, gen, ns.device)
    return evaluate_heldout(gen, prompts, reward, _params(ns), out)


def _eval_pairwise(ns: argparse.Namespace, prompts: list, out: Path) -> dict[str, Any]:
    from evarl.eval.io import outputs_by_instruction
    from evarl.eval.stats import pearson, reward_stats
    from evarl.eval.winrate import TEMPLATE_SLOTS, judge_pairwise, summarize_judgements

    instructions = [p.text for p in prompts]
    gen = None
    if ns.outputs:
        given = outputs_by_instruction(read_alpaca(ns.outputs, require_output=True), Path(ns.outputs).name)
        missing = [i for i in instructions if i not in given]
        if missing:
            raise ConfigError(
                [f"--outputs: {len(missing)} instruction(s) have no output, e.g. {missing[0][:60]!r}"]
            )
        outputs = [given[i].output or "" for i in instructions]
        gen_name = (
            next((given[i].generator for i in instructions if given[i].generator), None)
            or Path(ns.outputs).stem
        )
    else:
        gen = _generator(
            ns.model,
            ns.backend,
            ns.endpoint,
            ns.endpoint_model,
            ns.api_key_env,
            ns.batch_size,
            device=ns.device,
        )
        outputs = [o[0].text for o in gen.generate([p.messages for p in prompts], _params(ns))]
        gen_name = _model_name(ns)
    write_json(
        out / "model_outputs.json",
        [
            {"instruction": i, "output": o, "generator": gen_name, "dataset": p.category or ns.fmt}
            for i, o, p in zip(instructions, outputs, prompts)
        ],
    )
    result: dict[str, Any] = {"format": ns.fmt, "n": len(prompts), "generator": gen_name}
    if ns.reward:
        reward = _reward(ns.reward, ns.reward_model, gen, ns.device)
        res = reward.score(prompts, outputs)
        rewards = [None if r.failed else r.score for r in res]
        ok = [k for k, r in enumerate(res) if not r.failed]
        result["reward"] = reward_stats(rewards, [r.failed for r in res])
        result["reward_length_pearson"] = pearson([res[k].score for k in ok], [len(outputs[k]) for k in ok])
    judge = _judge(ns)
    if judge is not None:
        baseline_texts, baseline_name = _baseline(ns, prompts, instructions)
        tpl = load_template(ns.judge_template or "pairwise", TEMPLATE_SLOTS)
        jp = SamplingParams(1, 0.0, 1.0, ns.judge_max_new_tokens or 16, ns.seed)
        judgements = judge_pairwise(
            judge,
            instructions,
            outputs,
            baseline_texts,
            [p.id for p in prompts],
            tpl,
            jp,
        )
        write_jsonl(out / "judgements.jsonl", [x.to_dict() for x in judgements])
        wr = summarize_judgements(judgements, n_boot=ns.bootstrap, seed=ns.seed)
        wr["baseline"] = baseline_name
        wr["judge"] = ns.judge_model or ns.judge
        write_json(out / "winrate.json", wr)
        result["winrate"] = wr
    return result


def _baseline(ns: argparse.Namespace, prompts: list, instructions: list[str]) -> tuple[list[str], str]:
    """Baseline outputs in prompt order: AlpacaEval rows matched on `instruction`, or (arena) Arena-Hard
    model answers matched on `question_id`."""
    from evarl.eval.io import is_model_answers_file, outputs_by_instruction, read_model_answers

    path = ns.baseline_outputs
    if ns.fmt == "arena" and is_model_answers_file(path):
        by_qid = read_model_answers(path)
        qids = [str(p.meta.get("question_id")) for p in prompts]
        missing = [q for q in qids if q not in by_qid]
        if missing:
            raise ConfigError(
                [f"--baseline-outputs: {len(missing)} question(s) have no answer, e.g. {missing[0]}"]
            )
        return [by_qid[q] for q in qids], Path(path).stem
    base = outputs_by_instruction(read_alpaca(path, require_output=True), Path(path).name)
    missing = [i for i in instructions if i not in base]
    if missing:
        raise ConfigError(
            [
                f"--baseline-outputs: {len(missing)} instruction(s) have no baseline output, e.g. {missing[0][:60]!r}"
            ]
        )
    name = next((base[i].generator for i in instructions if base[i].generator), None) or Path(path).stem
    return [base[i].output or "" for i in instructions], name


def _eval_mtbench(ns: argparse.Namespace, out: Path) -> dict[str, Any]:
    from evarl.eval.mtbench import MULTI_SLOTS, SINGLE_SLOTS, answer_mtbench, grade_mtbench, mtbench_metrics

    questions = read_mtbench(ns.prompts)
    if ns.limit is not None:
        questions = questions[: ns.limit]
    gen = _generator(
        ns.model, ns.backend, ns.endpoint, ns.endpoint_model, ns.api_key_env, ns.batch_size, device=ns.device
    )
    answers = answer_mtbench(gen, questions, _params(ns))
    write_jsonl(
        out / "model_answers.jsonl",
        [
            {
                "question_id": a.question_id,
                "category": a.category,
                "model_id": _model_name(ns),
                "turns": a.turns,
            }
            for a in answers
        ],
    )
    result: dict[str, Any] = {"format": "mtbench", "n": len(questions), "generator": _model_name(ns)}
    judge = _judge(ns)
    if judge is None:
        result["note"] = "no --judge given: answers written to model_answers.jsonl, not graded"
        return result
    single = load_template(ns.judge_template or "mtbench_single", SINGLE_SLOTS)
    multi = load_template(ns.judge_template_turn2 or "mtbench_multiturn", MULTI_SLOTS)
    jp = SamplingParams(1, 0.0, 1.0, ns.judge_max_new_tokens or 256, ns.seed)
    grades = grade_mtbench(judge, questions, answers, jp, single, multi)
    write_jsonl(out / "judgements.jsonl", [g.to_dict() for g in grades])
    metrics = mtbench_metrics(grades)
    metrics["judge"] = ns.judge_model or ns.judge
    write_json(out / "mtbench.json", metrics)
    cats = {c: v for c, v in metrics["categories"].items() if v is not None}
    if len(cats) >= 3:  # seed 001 Figure 7
        from evarl.eval.plots import category_radar, to_png

        (out / "mtbench_radar.png").write_bytes(to_png(category_radar({_model_name(ns): cats})))
        result["radar"] = str(out / "mtbench_radar.png")
    result["mtbench"] = metrics
    return result


def cmd_report(ns: argparse.Namespace) -> int:
    from evarl.eval.report import build_report

    dirs = [Path(d) for d in ns.run_dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"run directory not found: {', '.join(missing)}")
    if ns.out:
        out = Path(ns.out)
    elif len(dirs) == 1:
        out = dirs[0]
    else:
        out = dirs[0].parent / "report-compare"
    res = build_report(dirs, out)
    for n in res["notes"]:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"report: {res['html']}  ({len(res['plots'])} plots under {out / 'plots'}; markdown {res['markdown']})"
    )
    return 0
