"""The vLLM backend inside the real loops, against a stand-in `vllm` module (vLLM itself needs CUDA and cannot be
installed on these machines; the path has not been run on a GPU).

The stand-in keeps vLLM's API surface that evarl uses (`LLM(**engine_kwargs)`, `generate` with token-id prompts
and one `SamplingParams` per prompt, `prompt_logprobs`, `sleep` / `wake_up(tags)`, `apply_model`,
`reset_prefix_cache`) and computes with a real copy of the tiny Llama, so the loops' calls are checked end to end:
the offline loop puts the engine to sleep before training and wakes it with the new checkpoint's weights; the
online loop pushes the trainer's weights after every update and logs the sampler/trainer log-prob gap.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

EVENTS: list[tuple] = []


class _Worker:
    """vLLM's worker-side model contract: `load_weights(iterable of (HF name, tensor))`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def load_weights(self, weights: Any) -> set[str]:
        params = dict(self.model.named_parameters())
        names = set()
        with torch.no_grad():
            for name, t in weights:
                if name in params:
                    params[name].copy_(t.to(params[name].dtype))
                    names.add(name)
        EVENTS.append(("load_weights", len(names)))
        return names


def _stand_in() -> types.ModuleType:
    from transformers import AutoModelForCausalLM

    mod = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

    class LLM:
        def __init__(self, model: str, **kw: Any) -> None:
            EVENTS.append(("init", model, tuple(sorted(kw))))
            self.hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
            self.kwargs = kw

        def sleep(self, level: int = 1) -> None:
            EVENTS.append(("sleep", level))

        def wake_up(self, tags: list[str] | None = None) -> None:
            EVENTS.append(("wake_up", tuple(tags) if tags else None))

        def reset_prefix_cache(self) -> None:
            EVENTS.append(("reset_prefix_cache",))

        def apply_model(self, fn: Any) -> list:
            return [fn(_Worker(self.hf))]

        def generate(self, prompts: list[dict], sps: Any, use_tqdm: bool = True) -> list:
            sps = sps if isinstance(sps, list) else [sps] * len(prompts)
            return [self._one(p["prompt_token_ids"], sp.kw) for p, sp in zip(prompts, sps)]

        def _one(self, ids: list[int], kw: dict) -> Any:
            x = torch.tensor([ids])
            if kw.get("prompt_logprobs") is not None:
                with torch.no_grad():
                    lp = torch.log_softmax(self.hf(x).logits[0].float(), -1)
                plp = [None] + [
                    {t: types.SimpleNamespace(logprob=float(lp[i, t]))} for i, t in enumerate(ids[1:])
                ]
                return types.SimpleNamespace(prompt_logprobs=plp, outputs=[])
            stop = list(kw.get("stop_token_ids") or [])
            torch.manual_seed(int(kw["seed"]) % (2**31))
            sample = kw["temperature"] > 0
            extra = {"temperature": kw["temperature"], "top_p": kw["top_p"], "top_k": 0} if sample else {}
            with torch.no_grad():
                out = self.hf.generate(x, attention_mask=torch.ones_like(x), do_sample=sample, max_new_tokens=kw["max_tokens"],
                                       num_return_sequences=kw["n"] if sample else 1, eos_token_id=stop or None,
                                       pad_token_id=stop[0] if stop else 0, **extra)  # fmt: skip
            rows = []
            for seq in out[:, len(ids) :].tolist():
                cut = next((k for k, t in enumerate(seq) if t in stop), None)
                toks = seq if cut is None else seq[: cut + 1]
                text_ids = toks if cut is None else toks[:-1]
                rows.append(types.SimpleNamespace(text=f"r{len(text_ids)}-" + "-".join(map(str, text_ids[:6])),
                                                  token_ids=toks, finish_reason="length" if cut is None else "stop",
                                                  logprobs=None))  # fmt: skip
            if not sample:
                rows = rows * kw["n"]
            return types.SimpleNamespace(outputs=rows, prompt_logprobs=None)

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    EVENTS.clear()
    monkeypatch.setitem(sys.modules, "vllm", _stand_in())
    return EVENTS


def test_offline_round_sleeps_the_engine_for_training_and_wakes_it_with_the_new_weights(
    fake_vllm: list[tuple], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from evarl.config import load_config
    from evarl.loop import run

    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "name=v", "rounds=1",
                             "threads=1", "generation.backend=vllm", "generation.n=2", "generation.max_new_tokens=6",
                             "generation.temperature=1.0", "task.train_prompts=8", "task.heldout_prompts=2",
                             "creator.methods=[constraint]", "reward.length_penalty=0.01", "solver.batch_size=2",
                             "solver.epochs=1", "solver.max_length=96", "solver.max_prompt_length=48", "solver.learning_rate=1e-2",
                             "eval.max_new_tokens=4"])  # fmt: skip
    run(cfg, progress=False)
    names = [e[0] for e in fake_vllm]
    assert names.count("init") == 1  # one engine for the whole run: slept and woken, never rebuilt
    init = next(e for e in fake_vllm if e[0] == "init")
    assert {
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "enable_prefix_caching",
        "enable_sleep_mode",
    } <= set(init[2])
    first_sleep = names.index("sleep")
    assert names[first_sleep + 1 :].count("load_weights") >= 1  # the trained checkpoint streamed in on wake
    assert ("wake_up", ("weights",)) in fake_vllm[first_sleep:]
    # what was streamed in on wake is the round's trained checkpoint, which differs from the base model
    trained = load_file(str(tmp_path / "v" / "round-001" / "train" / "model" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    changed = [k for k in trained if k in base and not torch.equal(trained[k], base[k])]
    assert changed, "training changed nothing"
    assert json.loads((tmp_path / "v" / "round-001" / "eval.json").read_text())["heldout"]["n"] == 2


def test_online_pushes_weights_after_each_update_and_logs_the_gap(
    fake_vllm: list[tuple], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from evarl.config import load_config
    from evarl.online import run_online

    args = [f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "threads=1", "algorithm=online",
            "generation.backend=vllm", "generation.n=3", "generation.temperature=1.0", "generation.max_new_tokens=6",
            "task.train_prompts=6", "task.heldout_prompts=2", "creator.methods=[constraint]", "online.steps=2",
            "online.batch_prompts=3", "online.buffer_size=4", "online.learning_rate=0.5", "online.kl_coef=0",
            "reward.length_penalty=0.01", "solver.max_length=96", "solver.max_prompt_length=48",
            "eval.enabled=false"]  # fmt: skip
    run_online(load_config(None, [*args, "name=synced"]), progress=False)
    steps = [json.loads(x) for x in (tmp_path / "synced" / "online" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(s["logp_gap"] < 1e-4 for s in steps), steps
    assert sum(e[0] == "load_weights" for e in fake_vllm) >= 2  # one push per update

    # the stale-weights bug, simulated: pushes that do nothing are caught by the gap check
    from evarl.generation.vllm_backend import VLLMGenerator

    original = VLLMGenerator.sync_weights
    try:
        VLLMGenerator.sync_weights = lambda self, named: 0  # type: ignore[method-assign]
        run_online(load_config(None, [*args, "name=stale"]), progress=False)
    finally:
        VLLMGenerator.sync_weights = original  # type: ignore[method-assign]
    steps = [json.loads(x) for x in (tmp_path / "stale" / "online" / "steps.jsonl").read_text().splitlines()]
    assert steps[-1]["logp_gap"] > 0.1, steps
    assert "stale" in capsys.readouterr().out
