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
from evarl.errors import EndpointError
from evarl.eval.formats import FORMATS, load_prompts, read_alpaca, read_mtbench
from evarl.generation.base import Generator, SamplingParams
from evarl.io import load_template, write_json, write_jsonl


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
    m.add_argument(
        "--timeout-s", type=float, default=120.0, help="per-request timeout for --endpoint / --judge-endpoint"
    )
    m.add_argument("--max-retries", type=int, default=5, help="retries per endpoint request (backoff)")
    m.add_argument(
        "--outputs",
        help="score these responses instead of generating: AlpacaEval [{instruction, output}] (alpaca/arena), or "
        "IFEval's {prompt, response} JSONL / AlpacaEval rows matched to the prompts by text (default/ifeval)",
    )
    d = e.add_argument_group("data")
    d.add_argument(
        "--prompts",
        required=True,
        help="prompt file (JSONL; AlpacaEval JSON arrays too); with --format default also Parquet / CSV / Arrow, "
        "a dataset folder or a cached hub dataset id (docs/data.md)",
    )
    d.add_argument("--format", choices=FORMATS, default="default", dest="fmt")
    d.add_argument("--limit", type=int, help="only the first N prompts")
    d.add_argument("--baseline-outputs", help="baseline outputs, AlpacaEval format (instruction, output)")
    j = e.add_argument_group("judge")
    j.add_argument("--judge", help='judge model directory or "embedded" (local transformers judge)')
    j.add_argument("--judge-endpoint", help="OpenAI-compatible base URL of the judge")
    j.add_argument("--judge-model", help="judge model name at --judge-endpoint")
    j.add_argument("--judge-template", help="template file replacing the shipped one (pairwise / turn 1)")
    j.add_argument("--judge-template-turn2", help="MT-Bench turn-2 template file")
    j.add_argument(
        "--arena-judge-config",
        help="Arena-Hard judging (5-level verdicts, both orders, Bradley-Terry score vs the baseline) for "
        "--format arena/alpaca: 'default' = evarl's own prompt (not the official one), or the path of "
        "Arena-Hard-Auto's judge_config.yaml, read in its own format",
    )
    j.add_argument(
        "--fastchat-judge-prompts",
        help="MT-Bench graded with FastChat's judge prompts: the path of your copy of FastChat's "
        "llm_judge/data/judge_prompts.jsonl (default: evarl's paraphrased templates)",
    )
    j.add_argument("--judge-max-new-tokens", type=int, help="judge reply budget (pairwise 16, MT-Bench 256)")
    j.add_argument(
        "--alpaca-annotator",
        help="AlpacaEval 2.0 judging for --format alpaca with the installed alpaca-eval package (pip install "
        "'evarl[alpaca]'): an evaluators_configs entry with a single-token log-prob parser, e.g. "
        "weighted_alpaca_eval_gpt4_turbo (its prompt, the log-prob-weighted preference, its LC win rate)",
    )
    j.add_argument(
        "--alpaca-eval-set",
        help="your copy of AlpacaEval's alpaca_eval.json (805 rows, official order): instructions matched by text "
        "get the package's LC win rate with its per-instruction difficulty term (else evarl's GLM without it)",
    )
    j.add_argument(
        "--alpaca-lc-bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples for the interval of the package's LC win rate (each refits its GLM, ~0.5 s)",
    )
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
    timeout_s: float = 120.0,
    max_retries: int = 5,
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
        # a judge request that fails on its own (timeout, 5xx) becomes an unparsable verdict (counted as a
        # failure); an endpoint that is refused, unreachable or does not serve the model raises EndpointError
        return OpenAIGenerator(endpoint, name, api_key_env=api_key_env, timeout_s=timeout_s,
                               max_retries=max_retries, raise_on_error=not for_judge)  # fmt: skip
    from evarl.dist import resolve_device
    from evarl.generation.hf import HFGenerator
    from evarl.models.loading import resolve_model_path

    return HFGenerator.from_path(
        resolve_model_path(model or "embedded"), batch_size=batch_size, device=resolve_device(device)
    )


def _client(ns: argparse.Namespace) -> dict[str, Any]:
    """The endpoint client's options (--timeout-s, --max-retries)."""
    return {"timeout_s": ns.timeout_s, "max_retries": ns.max_retries}


def _check_endpoints(ns: argparse.Namespace) -> None:
    """--endpoint / --judge-endpoint / --api-key-env / client options, before anything is loaded or written."""
    from evarl.endpoints import endpoint_problem

    if ns.timeout_s <= 0 or ns.max_retries < 0:
        raise ConfigError(
            [f"--timeout-s / --max-retries: need > 0 and >= 0, got {ns.timeout_s}, {ns.max_retries}"]
        )
    for flag, url in (("--endpoint", ns.endpoint), ("--judge-endpoint", ns.judge_endpoint)):
        problem = endpoint_problem(url, ns.api_key_env) if url else None
        if problem:
            raise ConfigError([f"{flag}: {problem}"])


def _judge(ns: argparse.Namespace) -> Generator | None:
    if ns.judge_endpoint:
        return _generator(
            ns.judge_model, "openai", ns.judge_endpoint, ns.judge_model, ns.api_key_env, 8, True,
            **_client(ns),
        )  # fmt: skip
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
    if ns.fmt != "alpaca" and (ns.alpaca_annotator or ns.alpaca_eval_set):
        raise ConfigError(
            [f"--alpaca-annotator / --alpaca-eval-set: only with --format alpaca, not {ns.fmt}"]
        )
    if ns.fmt == "mtbench" and (ns.baseline_outputs or ns.outputs):
        raise ConfigError(["--baseline-outputs / --outputs: not used with --format mtbench"])
    if ns.fmt in ("default", "ifeval") and (ns.baseline_outputs or ns.judge or ns.judge_endpoint):
        raise ConfigError(
            [f"--baseline-outputs / --judge: not used with --format {ns.fmt} (use alpaca or arena)"]
        )
    if ns.baseline_outputs and not (ns.judge or ns.judge_endpoint):
        raise ConfigError(["--baseline-outputs: a win rate needs a --judge or --judge-endpoint"])
    if ns.fmt in ("alpaca", "arena") and (ns.judge or ns.judge_endpoint) and not ns.baseline_outputs:
        raise ConfigError(["--judge: a pairwise win rate needs --baseline-outputs"])
    _check_endpoints(ns)
    try:
        if ns.fmt in ("default", "ifeval"):
            result = _eval_heldout(ns, prompts, out)
        elif ns.fmt == "mtbench":
            result = _eval_mtbench(ns, out)
        else:
            result = _eval_pairwise(ns, prompts, out)
    except EndpointError as e:  # refused / unreachable / wrong model: a failed evaluation, no null win rate
        failed = {"format": ns.fmt, "status": "failed", "error": str(e)}
        write_json(out / "summary.json", failed, sort_keys=True)
        raise
    write_json(out / "summary.json", result, sort_keys=True)
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"evarl eval: results in {out}", file=sys.stderr)
    return 0


def _eval_heldout(ns: argparse.Namespace, prompts: list, out: Path) -> dict[str, Any]:
    from evarl.eval.heldout import evaluate_heldout

    if ns.outputs:  # score a file of responses; no model is loaded
        from evarl.eval.replay import ReplayGenerator, match_prompts, read_responses

        responses = read_responses(ns.outputs)
        matched, counts = match_prompts(prompts, responses)
        if not matched:
            raise ConfigError(
                [f"--outputs: none of the {len(responses)} responses in {ns.outputs} matches a prompt's text"]
            )
        if ns.temperature != 0.0 or ns.max_new_tokens != EvalConfig().max_new_tokens:
            print("note: --temperature / --max-new-tokens are not used with --outputs", file=sys.stderr)
        replay = ReplayGenerator(responses, Path(ns.outputs).stem)
        reward = _reward(ns.reward or "verifier", ns.reward_model, None, ns.device)
        result = evaluate_heldout(replay, matched, reward, SamplingParams(1, 0.0, 1.0, 1, ns.seed), out)
        result["outputs"] = {"file": str(ns.outputs), **counts}
        if counts["unmatched_prompts"] or counts["unmatched_outputs"]:
            print(
                f"note: {counts['unmatched_prompts']} prompt(s) without a response were left out; "
                f"{counts['unmatched_outputs']} response(s) matched no prompt",
                file=sys.stderr,
            )
        return result
    gen = _generator(
        ns.model, ns.backend, ns.endpoint, ns.endpoint_model, ns.api_key_env, ns.batch_size, device=ns.device,
        **_client(ns),
    )  # fmt: skip
    reward = _reward(ns.reward or "verifier", ns.reward_model, gen, ns.device)
    return evaluate_heldout(gen, prompts, reward, _params(ns), out)


def _eval_pairwise(ns: argparse.Namespace, prompts: list, out: Path) -> dict[str, Any]:
    from evarl.eval.formats import outputs_by_instruction
    from evarl.eval.stats import pearson, reward_stats
    from evarl.eval.winrate import TEMPLATE_SLOTS, judge_pairwise, summarize_judgements

    alpaca = _alpaca_setup(ns)  # checked before anything is generated, loaded or written
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
            **_client(ns),
        )
        outputs = [o[0].text for o in gen.generate([p.messages for p in prompts], _params(ns))]
        gen_name = _model_name(ns)
    write_json(
        out / "model_outputs.json",
        [
            {"instruction": i, "output": o, "generator": gen_name, "dataset": p.category or ns.fmt}
            for i, o, p in zip(instructions, outputs, prompts)
        ],
        sort_keys=True,
    )
    result: dict[str, Any] = {"format": ns.fmt, "n": len(prompts), "generator": gen_name}
    if ns.reward:
        reward = _reward(ns.reward, ns.reward_model, gen, ns.device)
        res = reward.score(prompts, outputs)
        rewards = [None if r.failed else r.score for r in res]
        ok = [k for k, r in enumerate(res) if not r.failed]
        result["reward"] = reward_stats(rewards, [r.failed for r in res])
        result["reward_length_pearson"] = pearson([res[k].score for k in ok], [len(outputs[k]) for k in ok])
    if alpaca is not None:
        result["alpaca_eval"] = _eval_alpaca(ns, alpaca, prompts, instructions, outputs, gen_name, out)
        return result
    judge = _judge(ns)
    if judge is not None and ns.arena_judge_config:
        from evarl.eval.arena import ArenaJudgeConfig, arena_score, judge_arena

        acfg = (
            ArenaJudgeConfig.default()
            if ns.arena_judge_config == "default"
            else ArenaJudgeConfig.from_official(ns.arena_judge_config)
        )
        if ns.judge_max_new_tokens:
            acfg.max_tokens = ns.judge_max_new_tokens
        baseline_texts, baseline_name = _baseline(ns, prompts, instructions)
        games = judge_arena(judge, instructions, outputs, baseline_texts, [p.id for p in prompts], acfg)
        write_jsonl(out / "judgements.jsonl", [g.to_dict() for g in games], sort_keys=True)
        score = arena_score(games, n_boot=ns.bootstrap, seed=ns.seed)
        score.update(baseline=baseline_name, judge=ns.judge_model or ns.judge, judge_prompt=acfg.source)
        write_json(out / "arena.json", score, sort_keys=True)
        result["arena"] = score
        return result
    if judge is not None:
        baseline_texts, baseline_name = _baseline(ns, prompts, instructions)
        tpl = load_template(ns.judge_template or "pairwise", "eval", TEMPLATE_SLOTS)
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
        write_jsonl(out / "judgements.jsonl", [x.to_dict() for x in judgements], sort_keys=True)
        wr = summarize_judgements(judgements, n_boot=ns.bootstrap, seed=ns.seed)
        wr["baseline"] = baseline_name
        wr["judge"] = ns.judge_model or ns.judge
        write_json(out / "winrate.json", wr, sort_keys=True)
        result["winrate"] = wr
    return result


def _alpaca_setup(ns: argparse.Namespace) -> tuple[Any, dict[str, int] | None] | None:
    """--alpaca-annotator: the installed package's annotator and the AlpacaEval index of --alpaca-eval-set."""
    if not (ns.alpaca_annotator or ns.alpaca_eval_set):
        return None
    if not ns.alpaca_annotator:
        raise ConfigError(["--alpaca-eval-set: only used with --alpaca-annotator"])
    if ns.fmt != "alpaca" or ns.arena_judge_config:
        raise ConfigError(["--alpaca-annotator: needs --format alpaca and no --arena-judge-config"])
    if not (ns.judge or ns.judge_endpoint):
        raise ConfigError(["--alpaca-annotator: needs a --judge or --judge-endpoint and --baseline-outputs"])
    if ns.judge_endpoint and not ns.judge_model:
        raise ConfigError(["--judge-model: the model name served at --judge-endpoint is required"])
    if ns.judge_template or ns.judge_max_new_tokens:
        raise ConfigError(
            ["--judge-template / --judge-max-new-tokens: not used with --alpaca-annotator (its prompt)"]
        )
    if ns.alpaca_lc_bootstrap < 0:
        raise ConfigError([f"--alpaca-lc-bootstrap: need >= 0, got {ns.alpaca_lc_bootstrap}"])
    from evarl.eval.alpaca import load_annotator, read_alpaca_eval_set

    annotator = load_annotator(ns.alpaca_annotator)
    return annotator, (read_alpaca_eval_set(ns.alpaca_eval_set) if ns.alpaca_eval_set else None)


def _eval_alpaca(
    ns: argparse.Namespace, alpaca: tuple[Any, dict[str, int] | None], prompts: list, instructions: list[str],
    outputs: list[str], gen_name: str, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """AlpacaEval 2.0 judging (evarl.eval.alpaca): annotations.json in the package's format, alpaca_eval.json."""
    from evarl.eval.alpaca import EndpointLogprobJudge, HFLogprobJudge, alpaca_summary, annotate

    annotator, index = alpaca
    baseline_texts, baseline_name = _baseline(ns, prompts, instructions)
    if ns.judge_endpoint:
        judge: Any = EndpointLogprobJudge(
            ns.judge_endpoint, ns.judge_model, api_key_env=ns.api_key_env, timeout_s=ns.timeout_s,
            max_retries=ns.max_retries, temperature=annotator.temperature,
        )  # fmt: skip
    else:
        judge = HFLogprobJudge.from_path(ns.judge, batch_size=ns.batch_size, device=ns.device)
    rows = annotate(judge, annotator, instructions, outputs, baseline_texts, gen_name, baseline_name, ns.seed)
    write_json(out / "annotations.json", rows, sort_keys=True)
    summary = alpaca_summary(rows, annotator, index, ns.bootstrap, ns.alpaca_lc_bootstrap, ns.seed)
    summary.update(
        baseline=baseline_name, judge=ns.judge_model or ns.judge, annotator_model=annotator.config_model
    )
    if getattr(judge, "n_truncated", 0):
        summary["n_judge_prompts_truncated"] = judge.n_truncated
    write_json(out / "alpaca_eval.json", summary, sort_keys=True)
    print(f"note: LC win rate by {summary['lc_method']}: {summary['lc_note']}", file=sys.stderr)
    if summary["n_failed"]:
        print(f"note: {summary['n_failed']} preference(s) could not be parsed, left out", file=sys.stderr)
    return summary


def _baseline(ns: argparse.Namespace, prompts: list, instructions: list[str]) -> tuple[list[str], str]:
    """Baseline outputs in prompt order: AlpacaEval rows matched on `instruction`, or (arena) Arena-Hard
    model answers matched on `question_id`."""
    from evarl.eval.formats import is_model_answers_file, outputs_by_instruction, read_model_answers

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
        ns.model, ns.backend, ns.endpoint, ns.endpoint_model, ns.api_key_env, ns.batch_size, device=ns.device,
        **_client(ns),
    )  # fmt: skip
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
        sort_keys=True,
    )
    result: dict[str, Any] = {"format": "mtbench", "n": len(questions), "generator": _model_name(ns)}
    judge = _judge(ns)
    if judge is None:
        result["note"] = "no --judge given: answers written to model_answers.jsonl, not graded"
        return result
    single = load_template(ns.judge_template or "mtbench_single", "eval", SINGLE_SLOTS)
    multi = load_template(ns.judge_template_turn2 or "mtbench_multiturn", "eval", MULTI_SLOTS)
    fastchat = None
    if ns.fastchat_judge_prompts:
        from evarl.eval.mtbench import FastChatPrompts

        fastchat = FastChatPrompts.from_jsonl(ns.fastchat_judge_prompts)
    jp = SamplingParams(1, 0.0, 1.0, ns.judge_max_new_tokens or (2048 if fastchat else 256), ns.seed)
    grades = grade_mtbench(judge, questions, answers, jp, single, multi, fastchat=fastchat)
    write_jsonl(out / "judgements.jsonl", [g.to_dict() for g in grades], sort_keys=True)
    metrics = mtbench_metrics(grades)
    metrics["judge_prompts"] = (
        fastchat.source if fastchat else "evarl's templates (paraphrased; not FastChat's judge prompts)"
    )
    metrics["judge"] = ns.judge_model or ns.judge
    write_json(out / "mtbench.json", metrics, sort_keys=True)
    cats = {c: v for c, v in metrics["categories"].items() if v is not None}
    if len(cats) >= 3:  # seed 001 Figure 7
        from evarl.eval.report.figures import category_radar, to_png

        (out / "mtbench_radar.png").write_bytes(to_png(category_radar({_model_name(ns): cats})))
        result["radar"] = str(out / "mtbench_radar.png")
    result["mtbench"] = metrics
    return result


def cmd_report(ns: argparse.Namespace) -> int:
    from evarl.eval.report import build_report
    from evarl.runs import NotARunError, is_report_target, mark_report_folder

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
    ok, why = is_report_target(out)  # never overwrite a user's report.md / summary.json in a folder not ours
    if not ok:
        raise NotARunError(why)
    res = build_report(dirs, out)
    mark_report_folder(out)
    for n in res["notes"]:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"report: {res['html']}  ({len(res['plots'])} plots under {out / 'plots'}; markdown {res['markdown']})"
    )
    return 0
