"""benchmarks/gpu_check.py: its FLOP formula and results file by hand, and its whole code path on the CPU
(``--cpu-smoke``: build a tiny random Llama, HF generation, a timed DPO run, one eva round) in a subprocess."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _table(stdout: str) -> dict[str, str]:
    labels = [
        "model",
        "HF generation tokens/s",
        "HF generation MFU",
        "vLLM generation tokens/s",
        "DPO step time (s)",
        "DPO peak memory",
        "DPO MFU",
        "eva round wall time (s)",
        "eva round detail",
        "multi-GPU DPO",
        "DeepSpeed ZeRO-3 DPO",
        "result",
    ]
    rows = {}
    for line in stdout.splitlines():
        for label in labels:
            if line.startswith(label + "  "):
                rows[label] = line[len(label) :].strip()
    return rows


def test_train_step_flops_by_hand() -> None:
    gc = _module()
    # plain batch: one pair, prompt 2 tokens, chosen 3, rejected 1 -> rows of 5 and 3 tokens
    plain = {
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        "response_mask": torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]]),
    }
    n_body, d, v, layers = 1000, 8, 50, 2
    got = gc.train_step_flops(plain, n_body, d, v, layers)
    ctx = 5 * 6 // 2 + 3 * 4 // 2  # causal keys per token, summed
    assert got["tokens"] == 8 and got["head_tokens"] == 4 and not got["shared"]
    assert got["flops"] == 6 * n_body * 8 + 6 * d * v * 4 + 12 * layers * d * ctx
    # the same pair as a prompt-sharing batch: the prompt runs once
    shared = {
        "prompt_mask": torch.tensor([[1, 1]]),
        "resp_mask": torch.tensor([[True, True, True], [True, False, False]]),
    }
    got = gc.train_step_flops(shared, n_body, d, v, layers)
    ctx = 2 * 3 // 2 + (3 * 2 + 3 * 4 // 2) + (1 * 2 + 1)  # prompt, then each response after the prompt
    assert got["tokens"] == 6 and got["head_tokens"] == 4 and got["shared"]
    assert got["flops"] == 6 * n_body * 6 + 6 * d * v * 4 + 12 * layers * d * ctx


def test_peak_flops_by_name() -> None:
    gc = _module()
    assert gc.peak_flops("NVIDIA H200") == 989e12
    assert gc.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gc.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gc.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gc.peak_flops("Tesla T4") is None


def test_record_appends_and_keeps_earlier_sections(tmp_path: Path) -> None:
    gc = _module()
    info = {
        "gpus": 1,
        "gpu": "NVIDIA H200",
        "gpu_mem_gib": 139.8,
        "cuda": "12.8",
        "torch": "2.x",
        "transformers": "5.x",
        "accelerate": "1.x",
        "peft": "0.x",
        "cpus": 16,
        "python": "3.11",
        "platform": "Linux",
    }
    out = tmp_path / "RESULTS.md"
    gc.record(out, [("DPO step time (s)", "0.1"), ("a|b", "c|d")], info, smoke=False)
    first = out.read_text()
    assert first.startswith(gc.RESULTS_HEADER) and "1x NVIDIA H200 (140 GiB), CUDA 12.8" in first
    assert "| DPO step time (s) | 0.1 |" in first and "| a/b | c/d |" in first
    gc.record(out, [("DPO step time (s)", "0.2")], info, smoke=False)
    second = out.read_text()
    assert second.startswith(first) and second.count("## gpu_check ") == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA: the GPU check was not run" in proc.stdout


def test_cpu_smoke_runs_every_phase(tmp_path: Path, smollm2_dir: Path) -> None:
    results = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--cpu-smoke",
        "--tokenizer",
        str(smollm2_dir),
        "--workdir",
        str(tmp_path / "work"),
        "--results",
        str(results),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = _table(proc.stdout)
    assert rows["result"] == "passed"
    assert rows["model"].startswith("random Llama") and "hidden 64, 2 layers" in rows["model"]
    assert float(rows["HF generation tokens/s"]) > 0
    assert float(rows["DPO step time (s)"]) > 0
    assert re.match(r"\d+\.\d+ GiB \(process RSS\)", rows["DPO peak memory"])
    assert rows["DPO MFU"] == "n/a on CPU" and rows["HF generation MFU"] == "n/a on CPU"
    assert float(rows["eva round wall time (s)"]) > 0
    m = re.search(r"(\d+) pairs, DPO ([\d.]+) s/step over (\d+) steps", rows["eva round detail"])
    assert m and int(m.group(1)) > 0 and float(m.group(2)) > 0 and int(m.group(3)) > 0
    for label in ("vLLM generation tokens/s", "multi-GPU DPO", "DeepSpeed ZeRO-3 DPO"):
        assert rows[label].startswith("not run ("), rows[label]
    assert not results.exists()  # smoke runs are not recorded without --record
