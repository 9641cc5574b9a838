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


def _train(args: argparse.Namespace) -> int:
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
        from evarl.reward_training.pairwise_train import train_pairwise
        from evarl.rewards.judge import load_template
        from evarl.rewards.pairwise import PLACEHOLDERS

        if args.head_lr is not None or args.pooling is not None:
            raise SystemExit("train-rm: --head-lr and --pooling apply to --kind bt only")
        tmpl = load_template(args.template, PLACEHOLDERS, "pairwise") if args.template else None
        m = train_pairwise(args.backbone, Path(args.train), Path(args.out), lr=args.lr or 5e-6, template=tmpl,
                           **common)  # fmt: skip
    json.dump(m, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    m = evaluate_reward_model(args.model, Path(args.data), args.kind, args.batch_size, args.max_length)
    text = json.dumps(m, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


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
    e.add_argument("--kind", choices=["bt", "classifier", "pairwise"], default="bt")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-length", type=int, default=1024)
    e.add_argument("--out", default=None, help="also write the metrics JSON here")
    e.set_defaults(func=_eval)
