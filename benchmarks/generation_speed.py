"""Side-by-side generation speed: a naive per-prompt ``model.generate`` loop, today's batched backend
(``hf-static``), the new ``hf`` backend (KV-cache decode loop, :mod:`evarl.generation.fast`) and vLLM where CUDA
exists, in ONE process, interleaved repeat by repeat (the order rotates each repeat), so a machine shared with
other jobs slows every variant alike and the ratios stay meaningful.

Defaults are the default round's generation settings: 16 prompts of the default task
(``evarl.tasks.default.train_prompts(16, 0, 1, 3, "ifeval")``), n=4 samples, 96 new tokens, temperature 0.8,
top-p 0.95, on the embedded SmolLM2-135M-Instruct. Every variant gets the same prompts and sampling settings;
speed is generated tokens (up to and excluding the stop token, ``GenOutput.num_tokens``) per second of wall time
of the whole call (tokenisation, prefill, decoding, detokenisation).

Variants (``--variants``):

- ``naive``       per prompt, ``model.generate(num_return_sequences=n)``, float32 (the loop one writes first);
- ``static``      ``hf-static`` (``generate`` on a static batch of ``batch_size`` rows), float32: today's backend
  as ``evarl run`` used it (``generation.dtype`` unset = ``model.dtype`` = float32);
- ``static-bf16`` the same call in bfloat16 (what bf16 alone buys);
- ``new``         the new ``hf`` backend with ``dtype="auto"`` (bfloat16 on a CPU with AVX512-BF16/AMX or a
  bf16 CUDA device, else float32): the proposed default;
- ``new-fp32``    the new backend in float32 (what the decode loop alone buys);
- ``new-chunk8``  ``new`` called on chunks of 8 prompts, as ``evarl run``'s generation stage calls it with the
  default ``generation.chunk_prompts: 8`` (32 rows per call instead of 64);
- ``vllm``        ``vllm.LLM`` on the same token ids (only with CUDA and vLLM installed).

Usage::

    python benchmarks/generation_speed.py                       # defaults, 2 repeats, appends to RESULTS.md
    python benchmarks/generation_speed.py --repeats 3 --threads 1 --variants static,new
    python benchmarks/generation_speed.py --no-record           # print only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ALL_VARIANTS = ["naive", "static", "static-bf16", "new", "new-fp32", "new-chunk8", "vllm"]
DEFAULT_VARIANTS = ["naive", "static", "static-bf16", "new", "new-fp32", "new-chunk8", "vllm"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> str:
    import torch
    import transformers

    from evarl.generation.hf import cpu_has_native_bf16

    parts = [
        f"CPU {cpu_model()}",
        f"{os.cpu_count()} logical cores",
        f"torch threads {threads}",
        f"native bf16 {'yes' if cpu_has_native_bf16() else 'no'}",
        f"torch {torch.__version__}",
        f"transformers {transformers.__version__}",
        f"python {platform.python_version()}",
    ]
    if torch.cuda.is_available():
        parts.insert(1, f"GPU {torch.cuda.get_device_name(0)}")
    with contextlib.suppress(OSError):
        parts.append(f"load average at the end {os.getloadavg()[0]:.1f}")
    return ", ".join(parts)


class Runner:
    """Builds each variant once (models shared between variants of the same dtype) and times calls."""

    def __init__(self, model_path: str, batch_size: int, device: Any) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self._models: dict[str, Any] = {}
        self._tok: Any = None
        self._vllm: Any = None

    def _model(self, dtype: str) -> Any:
        from evarl.models.loading import load_causal_lm, load_tokenizer

        if self._tok is None:
            self._tok = load_tokenizer(self.model_path)
        if dtype not in self._models:
            self._models[dtype] = load_causal_lm(self.model_path, dtype, device=self.device).eval()
        return self._models[dtype]

    def generator(self, variant: str, n: int) -> Any:
        from evarl.generation.hf import HFGenerator, StaticHFGenerator, generation_dtype

        if variant == "naive":  # a static batch of one prompt = one generate() call per prompt
            return StaticHFGenerator(self._model("float32"), self._tok, batch_size=n)
        if variant == "static":
            return StaticHFGenerator(self._model("float32"), self._tok, batch_size=self.batch_size)
        if variant == "static-bf16":
            return StaticHFGenerator(self._model("bfloat16"), self._tok, batch_size=self.batch_size)
        if variant in ("new", "new-chunk8"):
            dtype = generation_dtype("auto", self.device)
            return HFGenerator(self._model(dtype), self._tok, batch_size=self.batch_size)
        if variant == "new-fp32":
            return HFGenerator(self._model("float32"), self._tok, batch_size=self.batch_size)
        raise ValueError(variant)

    def run(self, variant: str, convs: list[Any], params: Any) -> tuple[int, float]:
        if variant == "vllm":
            return self._run_vllm(convs, params)
        gen = self.generator(variant, params.n)
        step = 8 if variant == "new-chunk8" else len(convs)
        t0 = time.perf_counter()
        out = [row for c in range(0, len(convs), step) for row in gen.generate(convs[c : c + step], params)]
        wall = time.perf_counter() - t0
        return sum(o.num_tokens for row in out for o in row), wall

    def _run_vllm(self, convs: list[Any], params: Any) -> tuple[int, float]:
        import vllm

        from evarl.chat import render_chat

        if self._tok is None:
            from evarl.models.loading import load_tokenizer

            self._tok = load_tokenizer(self.model_path)
        if self._vllm is None:
            self._vllm = vllm.LLM(model=self.model_path, dtype="bfloat16", seed=0)
        tok = self._tok
        ids = [
            {"prompt_token_ids": tok(render_chat(tok, c), add_special_tokens=False)["input_ids"]}
            for c in convs
        ]
        sp = vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop_token_ids=[tok.eos_token_id],
        )
        t0 = time.perf_counter()
        outs = self._vllm.generate(ids, sp, use_tqdm=False)
        wall = time.perf_counter() - t0
        return sum(len(o.token_ids) - (o.finish_reason == "stop") for r in outs for o in r.outputs), wall


def available(variant: str) -> str | None:
    """None if the variant can run here, else why not."""
    if variant != "vllm":
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "vllm not installed"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded", help="model directory (default: the embedded SmolLM2)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--batch-size", type=int, default=64, help="rows per batch (generation.batch_size)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args(argv)

    import torch

    from evarl.dist import resolve_device
    from evarl.generation.base import SamplingParams
    from evarl.models.loading import resolve_model_path
    from evarl.tasks.default import train_prompts

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = resolve_device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {ALL_VARIANTS}")
    skipped = {v: why for v in variants if (why := available(v))}
    variants = [v for v in variants if v not in skipped]

    model_path = resolve_model_path(args.model)
    convs = [p.messages for p in train_prompts(args.prompts, 0, 1, 3, "ifeval")]
    params = SamplingParams(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    runner = Runner(model_path, args.batch_size, device)
    for v in variants:  # load every model before timing anything
        if v != "vllm":
            runner.generator(v, args.n)

    tokens: dict[str, list[int]] = {v: [] for v in variants}
    walls: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for v in order:
            ntok, wall = runner.run(v, convs, params)
            tokens[v].append(ntok)
            walls[v].append(wall)
            print(
                f"repeat {rep + 1} {v:12s} {ntok:6d} tokens {wall:8.1f} s {ntok / wall:8.1f} tok/s",
                flush=True,
            )

    # per repeat, tokens/s; ratios from the per-repeat speeds of the same repeat (side by side)
    speed = {v: [t / w for t, w in zip(tokens[v], walls[v])] for v in variants}
    lines = [
        f"{'variant':12s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>8s}  (median over {args.repeats} repeats; "
        "tokens = generated, up to the stop token)"
    ]
    for v in variants:
        lines.append(
            f"{v:12s} {statistics.median(tokens[v]):7.0f} {statistics.median(walls[v]):8.1f} "
            f"{statistics.median(speed[v]):8.1f}"
        )
    for why_v, why in skipped.items():
        lines.append(f"{why_v:12s} skipped: {why}")

    def ratio(a: str, b: str) -> str | None:
        if a not in speed or b not in speed:
            return None
        rs = [x / y for x, y in zip(speed[a], speed[b])]
        return f"{a} / {b}: {statistics.median(rs):.2f}x (per repeat: {', '.join(f'{r:.2f}' for r in rs)})"

    for a, b in [
        ("new", "static"),
        ("new", "naive"),
        ("new", "static-bf16"),
        ("new-fp32", "static"),
        ("static-bf16", "static"),
        ("static", "naive"),
        ("new-chunk8", "static"),
        ("vllm", "new"),
    ]:
        if (r := ratio(a, b)) is not None:
            lines.append(r)
    table = "\n".join(lines)
    info = machine_info(threads)
    settings = (
        f"{args.prompts} prompts x n={args.n}, {args.max_new_tokens} new tokens, temperature {args.temperature}, "
        f"top-p {args.top_p}, batch_size {args.batch_size}, model {args.model}, device {device}"
    )
    print()
    print(info)
    print(settings)
    print(table)
    if not args.no_record:
        when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        cmd = "python benchmarks/generation_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = (
            f"\n## generation_speed — {when}\n\n"
            f"Machine: {info}.\n\nCommand: `{cmd.strip()}`; {settings}.\n\n```\n{table}\n```\n"
        )
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(section)
        print(f"\nappended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
