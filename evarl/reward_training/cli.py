"""`evarl train-rm` and `evarl eval-rm`: reward-model training and RewardBench-style evaluation.

The lead's `evarl.cli` calls `add_subcommands(subparsers)`; each subcommand sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def evaluate_reward_model(
    model: str, data: Path, kind: str = "bt", batch_size: int = 8, max_length: int = 1024
) -> dict[str, Any]:
    """Accuracy of a reward model on a preference / RewardBench JSONL, overall and per `subset`.

    kind: "bt" or "classifier" (scalar RM: r(chosen) > r(rejected)), "pairwise" (P(chosen > rejected) > 0.5).
    """
    from evarl.eval.rm_metrics import per_category_accuracy, preference_accuracy, rewardbench_sections
    from evarl.models.loading import resolve_model_path
    from evarl.reward_training.data import load_preferences
    from evarl.types import Prompt

    rows = load_preferences(data)
    path = resolve_model_path(model)
    prompts = [Prompt(id=f"row{i}", messages=r.prompt) for i, r in enumerate(rows)]
    if kind in ("bt", "classifier"):
        from evarl.rewards.classifier import ClassifierReward

        src = ClassifierReward.from_path(path, batch_size=batch_size, max_length=max_length)
        c = src.score(prompts, [r.chosen for r in rows])
        j = src.score(prompts, [r.rejected for r in rows])
        chosen, rejected = [x.score for x in c], [x.score for x in j]
        truncated = sum(1 for x in c + j if x.info.get("truncated"))
        failed = 0
    elif kind == "pairwise":
        from evarl.rewards.pairwise import PairwiseReward

        src = PairwiseReward.from_path(path, batch_size=batch_size, max_length=max_length)
        probs, trunc = src.preference(prompts, [r.chosen for r in rows], [r.rejected for r in rows])
        keep = [i for i, p in enumerate(probs) if p == p]  # NaN: did not fit, excluded and counted
        failed = len(rows) - len(keep)
        rows = [rows[i] for i in keep]
        chosen, rejected = [float(probs[i]) for i in keep], [0.5] * len(keep)
        truncated = int(trunc.sum())
    else:
        raise ValueError(f"eval-rm: --kind must be bt, classifier or pairwise, got {kind!r}")
    if not rows:
        raise ValueError(f"{data}: no row could be scored")
    out: dict[str, Any] = {
        "model": model,
        "data": str(data),
        "kind": kind,
        "n": len(rows),
        "n_failed": failed,
        "truncated": truncated,
        "accuracy": preference_accuracy(chosen, rejected),
    }
    subsets = [r.subset for r in rows]
    if any(subsets):
        per = per_category_accuracy(chosen, rejected, [s or "(none)" for s in subsets])
        out["per_subset"] = per
        sections = rewardbench_sections(per)
        if sections:
            out["rewardbench_sections"] = sections
    return out


def check_args(args: argparse.Namespace, model_flag: str) -> None:
    """Numbers and the model path of `train-rm` / `eval-rm`, checked before any model or data is loaded:
    a ConfigError naming every bad flag."""
    import math

    from evarl.config import ConfigError, model_path_problem, range_problem

    errors = []
    model = getattr(args, model_flag.removeprefix("--"))
    problem = model_path_problem(model, model_flag)
    if problem:
        errors.append(problem)
    for name in ("epochs", "lr", "head_lr", "batch_size", "max_length"):
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value):
            errors.append(f"{flag}: must be a finite number, got {value}")
        elif problem := range_problem(flag, value, ">0"):
            errors.append(problem)
    if errors:
        raise ConfigError(errors)


def _train(args: argparse.Namespace) -> int:
    check_args(args, "--backbone")
    common = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        eval_file=Path(args.eval) if args.eval else None,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    if args.kind == "bt":
        from evarl.reward_training.bt import train_bt

        if args.template:
            raise SystemExit("train-rm: --template applies to --kind pairwise only")
        m = train_bt(args.backbone, Path(args.train), Path(args.out), lr=args.lr or 5e-5,
                     head_lr=args.head_lr, pooling=args.pooling, **common)  # fmt: skip
    else:
        from evarl.io import load_template
        from evarl.reward_training.pairwise_train import train_pairwise
        from evarl.rewards.pairwise import PLACEHOLDERS

        if args.head_lr is not None or args.pooling is not None:
            raise SystemExit("train-rm: --head-lr and --pooling apply to --kind bt only")
        tmpl = load_template(args.template, "pairwise", PLACEHOLDERS) if args.template else None
        m = train_pairwise(args.backbone, Path(args.train), Path(args.out), lr=args.lr or 5e-6, template=tmpl,
                           **common)  # fmt: skip
    json.dump(m, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


RANKING_KINDS = ("judge", "bt", "classifier")


def load_ranking_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ranking file: {"prompt": str | messages, "responses": [str, ...] (>= 2), and optionally
    "reference": [score per response] (higher = better, from a stronger judge or reward model)}."""
    from evarl.io import DataError, iter_jsonl

    rows = []
    for i, row in iter_jsonl(path):
        where = f"{path}:{i}"
        p = row.get("prompt")
        if isinstance(p, str) and p.strip():
            msgs = [{"role": "user", "content": p}]
        elif (
            isinstance(p, list)
            and p
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in p)
        ):
            msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in p]
        else:
            raise DataError(f"{where}: field 'prompt': expected a non-empty string or a list of messages")
        rs = row.get("responses")
        if not isinstance(rs, list) or len(rs) < 2 or not all(isinstance(x, str) for x in rs):
            raise DataError(f"{where}: field 'responses': expected a list of at least 2 strings")
        ref = row.get("reference")
        if ref is not None and (
            not isinstance(ref, list)
            or len(ref) != len(rs)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in ref)
        ):
            raise DataError(f"{where}: field 'reference': expected {len(rs)} numbers, one per response")
        rows.append({"prompt": msgs, "responses": rs, "reference": ref, "line": i})
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def ranking_scorer(
    model: str, kind: str, endpoint: str | None, batch_size: int, max_length: int, device: Any = None
) -> tuple[Any, float | None]:
    """(reward source, max score) of a judge (the additive 5-point prompt, a local model or an endpoint serving
    `model`) or a scalar reward model (bt / classifier); max score is 5 for a judge (for 5-best %), else None."""
    from evarl.models.loading import resolve_model_path

    if kind == "judge":
        from evarl.rewards.judge import JudgeReward

        if endpoint:
            from evarl.generation.openai_api import OpenAIGenerator

            gen: Any = OpenAIGenerator(endpoint, model, raise_on_error=False)
        else:
            from evarl.generation.hf import HFGenerator

            gen = HFGenerator.from_path(resolve_model_path(model), batch_size=batch_size, device=device)
        return JudgeReward(gen, max_new_tokens=max_length), 5.0
    from evarl.rewards.classifier import ClassifierReward

    rm = ClassifierReward.from_path(resolve_model_path(model), batch_size=batch_size, max_length=max_length)
    return rm, None


def evaluate_ranking(
    model: str,
    data: Path,
    kind: str = "judge",
    reference: str | None = None,
    reference_kind: str = "judge",
    endpoint: str | None = None,
    reference_endpoint: str | None = None,
    batch_size: int = 8,
    max_length: int = 192,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The reward-modelling metrics of a judge or reward model against a reference ranking (seed 002 §4.1.2,
    Table 2: pairwise accuracy, 5-best %, exact match, Spearman, Kendall tau; plus top-1), each with n and a 95%
    bootstrap interval over prompts. The reference is the rows' `reference` scores, or `reference` (a model
    scored the same way, `reference_kind`). A response either side fails to score (a judge reply without a
    score) is left out of its prompt and counted; a prompt left with fewer than 2 responses is dropped and
    counted."""
    from evarl.eval.rm_metrics import ranking_report_with_intervals
    from evarl.io import DataError
    from evarl.types import Prompt

    rows = load_ranking_rows(data)
    if reference is None and any(r["reference"] is None for r in rows):
        line = next(r["line"] for r in rows if r["reference"] is None)
        raise DataError(f"{data}:{line}: field 'reference': missing, and no --reference model was given")
    flat_p = [Prompt(id=f"row{r['line']}", messages=r["prompt"]) for r in rows for _ in r["responses"]]
    flat_r = [x for r in rows for x in r["responses"]]

    def scores(src: Any) -> list[float | None]:
        return [None if x.failed else float(x.score) for x in src.score(flat_p, flat_r)]

    src, max_score = ranking_scorer(model, kind, endpoint, batch_size, max_length)
    pred = scores(src)
    if reference is not None:
        ref_src, _ = ranking_scorer(reference, reference_kind, reference_endpoint, batch_size, max_length)
        ref = scores(ref_src)
    else:
        ref = [float(x) for r in rows for x in r["reference"]]
    pg: list[list[float]] = []
    rg: list[list[float]] = []
    k = failed = dropped = 0
    for r in rows:
        keep = [
            (pred[k + j], ref[k + j])
            for j in range(len(r["responses"]))
            if pred[k + j] is not None and ref[k + j] is not None
        ]
        failed += len(r["responses"]) - len(keep)
        k += len(r["responses"])
        if len(keep) < 2:
            dropped += 1
            continue
        pg.append([a for a, _ in keep])
        rg.append([b for _, b in keep])
    if not pg:
        raise DataError(f"{data}: no prompt kept 2 scored responses ({failed} responses failed to score)")
    out: dict[str, Any] = {
        "model": model,
        "kind": kind,
        "reference": reference or "data",
        "data": str(data),
        "n_rows": len(rows),
        "n_responses_failed": failed,
        "n_prompts_dropped": dropped,
    }
    out.update(ranking_report_with_intervals(pg, rg, max_score, n_boot=n_boot, seed=seed))
    return out


def _eval(args: argparse.Namespace) -> int:
    check_args(args, "--model")
    ranking = args.kind == "judge" or args.reference is not None or _is_ranking_file(Path(args.data))
    if ranking:
        from evarl.config import ConfigError

        if args.kind not in RANKING_KINDS:
            raise ConfigError(
                [f"--kind: ranking metrics score each response; use one of {', '.join(RANKING_KINDS)}"]
            )
        m = evaluate_ranking(
            args.model, Path(args.data), args.kind, args.reference, args.reference_kind, args.endpoint,
            args.reference_endpoint, args.batch_size, args.max_new_tokens if args.kind == "judge" else args.max_length,
            seed=args.seed,
        )  # fmt: skip
        text = json.dumps(m, indent=2)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
        print(text)
        return 0
    m = evaluate_reward_model(args.model, Path(args.data), args.kind, args.batch_size, args.max_length)
    text = json.dumps(m, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _is_ranking_file(path: Path) -> bool:
    """Whether the first row of a JSONL file is a ranking row (it has "responses")."""
    from evarl.io import iter_jsonl

    for _, row in iter_jsonl(path):
        return "responses" in row
    return False


def add_subcommands(subparsers: Any) -> None:
    """Add `train-rm` and `eval-rm` to an argparse subparsers object."""
    t = subparsers.add_parser(
        "train-rm",
        help="train a Bradley-Terry reward model or a pairwise preference model on preference JSONL",
        description="Train a reward model on TRL-format preference JSONL ({prompt, chosen, rejected}).",
    )
    t.add_argument("--kind", choices=["bt", "pairwise"], default="bt")
    t.add_argument("--backbone", default="embedded", help="model dir or hub id ('embedded' = SmolLM2)")
    t.add_argument("--train", required=True, help="training preference JSONL")
    t.add_argument("--eval", default=None, help="held-out preference JSONL (accuracy reported)")
    t.add_argument("--out", required=True, help="output model directory")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=None, help="default 5e-5 (bt), 5e-6 (pairwise)")
    t.add_argument("--head-lr", type=float, default=None, help="bt: head learning rate (default 10 x lr)")
    t.add_argument("--pooling", choices=["mean", "last", "cls"], default=None, help="bt: default by backbone")
    t.add_argument("--template", default=None, help="pairwise: template file or name under prompts/pairwise")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--max-length", type=int, default=512)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    t.add_argument("--trust-remote-code", action="store_true")
    t.set_defaults(func=_train)

    e = subparsers.add_parser(
        "eval-rm",
        help="accuracy of a reward model on preference / RewardBench JSONL, per subset",
        description="Evaluate a reward model: accuracy overall, per subset and per RewardBench section.",
    )
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True, help="JSONL with prompt, chosen, rejected (and optional subset)")
    e.add_argument(
        "--kind",
        choices=["bt", "classifier", "pairwise", "judge"],
        default="bt",
        help="judge: an LLM judge with the additive 5-point prompt (ranking files only)",
    )
    e.add_argument("--endpoint", help="judge: OpenAI-compatible base URL serving --model")
    e.add_argument("--reference", help="ranking: a stronger judge / reward model giving the reference scores")
    e.add_argument("--reference-kind", choices=list(RANKING_KINDS), default="judge")
    e.add_argument("--reference-endpoint", help="ranking: OpenAI-compatible base URL serving --reference")
    e.add_argument("--max-new-tokens", type=int, default=192, help="judge reply budget")
    e.add_argument("--seed", type=int, default=0, help="bootstrap seed of the ranking intervals")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-length", type=int, default=1024)
    e.add_argument("--out", default=None, help="also write the metrics JSON here")
    e.set_defaults(func=_eval)
