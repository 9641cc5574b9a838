"""Side-by-side DPO training speed and peak memory: evarl's solver vs TRL's DPOTrainer.

Both train the same pairs, on the same model, with the same hyper-parameters (sigmoid DPO, beta 0.1, AdamW,
constant LR, float32, no gradient checkpointing, same batch size and number of optimizer steps), each in its
own subprocess so that peak RSS (``ru_maxrss``) is measured per trainer. Both times run from loading the model
to the end of training: evarl's includes its reference pass (``compute_reference_logps``, once before
training), tokenisation and the final save; TRL's includes the ``DPOTrainer`` constructor (tokenisation, the
reference copy, or the reference precompute with ``--trl-precompute``) and ``trainer.train()``. TRL runs with
its default in-step reference model and, with ``--trl-precompute``, also with ``precompute_ref_log_probs``.

Where evarl's advantage comes from: each pair's prompt runs through the decoder once for both responses
(KV-cache prefix sharing), the reference model is never resident during training (log-probs are a
precomputed artifact), length-grouped batches pad less, and only the hidden states that predict response
tokens go through the LM head (on CPU TRL's fused head projects every position, prompt included).

Usage::

    python benchmarks/solver_speed.py                      # embedded SmolLM2-135M-Instruct, 16 pairs
    python benchmarks/solver_speed.py --model DIR --pairs 64 --threads 4 --trl-precompute

Measured 2026-12-01 on the 2-core development VM, shared with other jobs (load average 4-5), so absolute
times are noisy; SmolLM2-135M-Instruct, 16 synthetic pairs, batch 4, max length 512, ``--threads 1``.
(With ``--threads 2`` on that loaded 2-core machine every op waits for both cores and timings varied 2x run to
run: one such 1-epoch run gave 1.15x faster at 0.62x peak RSS; use one thread per core that is really free.)

    1 epoch (4 steps):   evarl  74.9 s  4278 MiB | TRL 113.5 s  6810 MiB | TRL precompute 106.4 s  6251 MiB
                         -> 1.51x faster than TRL (1.42x vs TRL precompute), peak RSS 0.63x (0.68x)
    2 epochs (8 steps):  evarl 109.5 s  4607 MiB | TRL 190.4 s  6814 MiB | TRL precompute 146.9 s  6320 MiB
                         -> 1.74x faster than TRL (1.34x vs TRL precompute), peak RSS 0.68x (0.73x)

Re-measured 2026-12-01 on the same VM while it was idle, defaults (``--threads 0`` = torch's 2 threads, 1 epoch):

    evarl 38.9 s  4080 MiB | TRL 55.6 s  6743 MiB  -> 1.43x faster, peak RSS 0.61x

Peak RSS is the whole worker process (imports, data, model(s), optimizer state).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TEXT = (
    "the model learns to follow instructions with care and writes clear helpful answers about science history "
    "cooking travel music code maths poetry gardens rivers mountains cities markets stories puzzles"
)
WORDS = _TEXT.split()


def make_pairs(n: int, seed: int) -> list[dict]:
    """Deterministic synthetic pairs with varied lengths (prompt 8-40 words, responses 10-120 words)."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    return [
        {
            "prompt_id": f"b{i}",
            "prompt": [{"role": "user", "content": text(8, 40) + "?"}],
            "chosen": text(10, 120),
            "rejected": text(10, 120),
        }
        for i in range(n)
    ]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_evarl(args: argparse.Namespace, pairs: list[dict], out: Path) -> dict:
    import torch

    from evarl.config import SolverConfig
    from evarl.models.loading import load_causal_lm, load_tokenizer
    from evarl.solver.logprobs import compute_reference_logps
    from evarl.solver.trainer import train_preference
    from evarl.types import Pair

    ps = [Pair(**p) for p in pairs]
    cfg = SolverConfig(
        loss="dpo",
        beta=0.1,
        learning_rate=args.lr,
        scheduler="constant",
        warmup_ratio=0.0,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=1,
        max_length=args.max_length,
        max_prompt_length=args.max_length // 2,
        save_every=0,
        max_grad_norm=1.0,
    )
    t0 = time.time()
    ref = load_causal_lm(args.model)
    rows = compute_reference_logps(ref, load_tokenizer(args.model), ps, cfg, args.batch_size)
    del ref
    t_ref = time.time() - t0
    summary = train_preference(args.model, ps, rows, cfg, out, seed=0, progress=False)
    return {
        "seconds": time.time() - t0,
        "ref_seconds": t_ref,
        "steps": summary["steps"],
        "mean_loss": summary["mean_loss"],
        "threads": torch.get_num_threads(),
    }


def run_trl(args: argparse.Namespace, pairs: list[dict], out: Path, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from evarl.models.loading import load_causal_lm, load_tokenizer

    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]
    dcfg = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        num_train_epochs=args.epochs,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=args.max_length,
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=args.batch_size,
        disable_tqdm=True,
    )
    t0 = time.time()  # from model load, like evarl: tokenisation, reference copy / precompute included
    model = load_causal_lm(args.model)
    trainer = DPOTrainer(
        model=model,
        args=dcfg,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(args.model),
    )
    res = trainer.train()
    return {
        "seconds": time.time() - t0,
        "steps": res.global_step,
        "mean_loss": res.training_loss,  # TRL's mean training loss over all steps
        "threads": torch.get_num_threads(),
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = json.loads(Path(args.pairs_file).read_text())
    with tempfile.TemporaryDirectory() as d:
        if args.worker == "evarl":
            res = run_evarl(args, pairs, Path(d))
        else:
            res = run_trl(args, pairs, Path(d), precompute=args.worker == "trl-precompute")
    res["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(res), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded", help="model directory (default: embedded SmolLM2-135M)")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each worker (0 = torch default)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--epochs", type=int, default=1, help="epochs (appendix A's DPO recipe uses 2)")
    ap.add_argument(
        "--trl-precompute", action="store_true", help="also run TRL with precompute_ref_log_probs"
    )
    ap.add_argument("--worker", choices=["evarl", "trl", "trl-precompute"], help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model == "embedded":
        from evarl.models.loading import embedded_model_dir

        args.model = str(embedded_model_dir())
    if args.worker:
        worker(args)
        return

    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        pf = Path(d) / "pairs.json"
        pf.write_text(json.dumps(make_pairs(args.pairs, seed=0)))
        kinds = ["evarl", "trl"] + (["trl-precompute"] if args.trl_precompute else [])
        for kind in kinds:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--pairs-file",
                str(pf),
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--batch-size",
                str(args.batch_size),
                "--max-length",
                str(args.max_length),
                "--lr",
                str(args.lr),
                "--epochs",
                str(args.epochs),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{kind} worker failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
            results[kind] = json.loads(line[len("RESULT ") :])
            r = results[kind]
            print(
                f"{kind:15s} {r['seconds']:8.1f} s  peak RSS {r['peak_rss_mb']:8.0f} MiB  steps {r['steps']}  "
                f"mean loss {r['mean_loss']:.4f}  threads {r['threads']}",
                flush=True,
            )
    ev = results["evarl"]
    for kind in kinds[1:]:
        t = results[kind]
        print(
            f"vs {kind}: evarl is {t['seconds'] / ev['seconds']:.2f}x faster, "
            f"peak memory ratio evarl/{kind} = {ev['peak_rss_mb'] / t['peak_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
