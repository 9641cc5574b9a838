"""`evarl sft`: supervised fine-tuning on the shared training engine (the M_1 step of the self-learning pipelines).

Seed paper: Exploring Self-Learning and Teacher-Guided Paradigms in LM Alignment, §3.1.1: M_1 is the base model
fine-tuned on instruction-following data (IFT) plus evaluation-fine-tuning data (EFT), so that it can both answer
and act as the 5-point judge of its own responses.

* ``--data FILE`` (repeatable): instruction data in TRL's formats (``{"messages": [...]}`` or
  ``{"prompt", "completion"}``), see :mod:`evarl.solver.sft`.
* ``--eft FILE`` (repeatable): rows ``{"prompt", "response", "score", "rationale"}``. Each becomes one example
  whose prompt is the additive 5-point judge prompt (``evarl/prompts/judge/additive_5point.txt``, the one the
  ``judge`` reward source sends) filled with the prompt and the response, and whose target is the judgement the
  judge should emit: the rationale, then ``Score: <score>``. The target is checked to parse back to its score
  with the judge's own parser (:mod:`evarl.eft`), so what is trained is exactly what the judge reads.

Bad rows stop before any model is loaded with ``file:line: field '...': problem`` and exit status 2; the output
directory is not touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evarl.config import ConfigError, SolverConfig
from evarl.io import DataError
from evarl.solver.sft import SFTExample, load_sft_examples


def cmd_sft(ns: argparse.Namespace) -> int:
    from evarl.eft import judge_template, load_eft_examples

    if not ns.data and not ns.eft:
        raise ConfigError(["evarl sft: give at least one --data (instruction data) or --eft file"])
    examples: list[SFTExample] = []
    counts: dict[str, int] = {}
    for f in ns.data or []:
        exs = load_sft_examples(f)
        counts[f] = len(exs)
        examples.extend(exs)
    if ns.eft:
        template = judge_template(ns.eft_template)
        for f in ns.eft:
            exs = load_eft_examples(f, template)
            counts[f] = len(exs)
            examples.extend(exs)
    if not examples:
        raise DataError(f"{', '.join([*(ns.data or []), *(ns.eft or [])])}: no examples")
    cfg = SolverConfig(
        learning_rate=ns.lr,
        epochs=ns.epochs,
        batch_size=ns.batch_size,
        grad_accum=ns.grad_accum,
        max_length=ns.max_length,
        max_prompt_length=min(ns.max_prompt_length, ns.max_length - 1),
        scheduler=ns.scheduler,
        warmup_ratio=ns.warmup_ratio,
        param_dtype=ns.param_dtype,
        mixed_precision=ns.mixed_precision,
        gradient_checkpointing=ns.gradient_checkpointing,
        save_every=ns.save_every,
    )
    errors = [
        f"--{k.replace('_', '-')}: must be > 0, got {v}"
        for k, v in (("lr", ns.lr), ("epochs", ns.epochs), ("batch_size", ns.batch_size),
                     ("grad_accum", ns.grad_accum), ("max_length", ns.max_length))
        if v <= 0
    ]  # fmt: skip
    if errors:
        raise ConfigError(errors)
    from evarl.dist import resolve_device
    from evarl.models.loading import resolve_model_path
    from evarl.solver.sft import train_sft

    try:
        device = resolve_device(ns.device)
    except ValueError as e:
        raise ConfigError([f"--device: {e}"]) from e
    out = Path(ns.out)
    summary = train_sft(
        resolve_model_path(ns.model), examples, cfg, out, ns.seed, progress=not ns.quiet, device=device
    )
    result = {"model": str(out / "model"), "files": counts, **summary}
    print(json.dumps(result, indent=2, default=str))
    print(f"evarl sft: model in {out / 'model'}", file=sys.stderr)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add `sft` to the `evarl` parser (called by evarl.cli.build_parser)."""
    d = SolverConfig()
    s = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning on instruction data (TRL messages) and judge (EFT) data",
        description=__doc__.split("\n\n")[1] + "\n\n" + __doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--model", default="embedded", help='model directory, hub id, or "embedded" (SmolLM2)')
    s.add_argument("--data", action="append", help="instruction JSONL (messages or prompt/completion)")
    s.add_argument(
        "--eft",
        action="append",
        help='EFT JSONL: prompt, response, score (0-5), rationale ("embedded": 24 shipped rows)',
    )
    s.add_argument(
        "--eft-template", help="judge template file or name under prompts/judge (default: 5-point)"
    )
    s.add_argument("--out", required=True, help="output directory (the model goes to OUT/model)")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--lr", type=float, default=1e-5)
    s.add_argument("--batch-size", type=int, default=d.batch_size)
    s.add_argument("--grad-accum", type=int, default=d.grad_accum)
    s.add_argument("--max-length", type=int, default=512)
    s.add_argument("--max-prompt-length", type=int, default=448)
    s.add_argument("--scheduler", choices=["cosine", "linear", "constant"], default=d.scheduler)
    s.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    s.add_argument("--param-dtype", choices=["float32", "bfloat16"], default=d.param_dtype)
    s.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=d.mixed_precision)
    s.add_argument("--gradient-checkpointing", action="store_true")
    s.add_argument("--save-every", type=int, default=d.save_every, help="steps between resumable checkpoints")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_sft)
