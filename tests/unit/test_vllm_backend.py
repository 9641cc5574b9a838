"""The vLLM backend against a stand-in `vllm` module with vLLM's API surface (vLLM needs CUDA; not installable
here): the exact engine arguments from a config, token-id prompts with a single BOS (Gemma-style template),
per-prompt seeds and stop ids, output parsing, release/wake around training, weight sync."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from evarl.config import load_config
from evarl.generation.base import Releasable, SamplingParams

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}"
    "\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
WORDS = ["user", "model", "hi", "there", "how", "are", "you", "a", "b", "evarlreplymarker7q"]


def gemma_style_tokenizer(out: Path) -> Any:
    """A small fast tokenizer that adds <bos> when asked for special tokens, with a Gemma-style template that
    writes {{ bos_token }} itself: tokenising its rendered text with special tokens gives two BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tok.chat_template = GEMMA_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return tok


class FakeLogprob:
    def __init__(self, logprob: float) -> None:
        self.logprob = logprob


class FakeModel:
    """What `LLM.apply_model` hands to a function inside a worker: a model with `load_weights`."""

    def __init__(self) -> None:
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights):
        for name, t in weights:
            self.loaded[name] = t.clone()
        return {n for n, _ in weights}


def stand_in_vllm(calls: list) -> types.ModuleType:
    """A `vllm` module with the API surface the backend uses: LLM(**kwargs), generate(prompts, params,
    use_tqdm) -> RequestOutput-like objects, sleep(level), wake_up(tags), reset_prefix_cache(), apply_model(fn),
    get_tokenizer(); SamplingParams(**kwargs)."""
    mod = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        instances: list = []

        def __init__(self, model: str, **kw):
            self.kwargs = {"model": model, **kw}
            self.model = FakeModel()
            calls.append(("LLM", model))
            LLM.instances.append(self)

        def get_tokenizer(self):
            raise AssertionError("the backend must render with the policy's HF tokenizer, not vLLM's")

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls.append(("generate", len(prompts)))
            self.last = (prompts, sampling_params)
            if not isinstance(sampling_params, list):  # prompt_logprobs scoring request
                outs = []
                for p in prompts:
                    ids = p["prompt_token_ids"]
                    plp = [None] + [{t: FakeLogprob(-0.1 * (k + 1))} for k, t in enumerate(ids[1:])]
                    outs.append(types.SimpleNamespace(prompt_logprobs=plp, outputs=[]))
                return outs
            outs = []
            for p, sp in zip(prompts, sampling_params):
                eot = sp.kw["stop_token_ids"][-1]
                comp = [
                    types.SimpleNamespace(text=" a b ", token_ids=[10, 11, eot], finish_reason="stop",
                                          logprobs=[{10: FakeLogprob(-0.5)}, {11: FakeLogprob(-1.0)},
                                                    {eot: FakeLogprob(-0.25)}]),
                    types.SimpleNamespace(text="a a a", token_ids=[10, 10, 10], finish_reason="length",
                                          logprobs=None),
                ][: sp.kw["n"]]  # fmt: skip
                outs.append(types.SimpleNamespace(outputs=comp, prompt_token_ids=p["prompt_token_ids"]))
            return outs

        def sleep(self, level=1):
            calls.append(("sleep", level))

        def wake_up(self, tags=None):
            calls.append(("wake_up", tuple(tags) if tags else None))

        def reset_prefix_cache(self):
            calls.append(("reset_prefix_cache",))
            return True

        def apply_model(self, func):
            calls.append(("apply_model",))
            return [func(self.model)]

    mod.LLM = LLM
    mod.SamplingParams = SamplingParams
    return mod


@pytest.fixture
def fake_vllm(monkeypatch):
    calls: list = []
    mod = stand_in_vllm(calls)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod, calls


@pytest.fixture
def gemma_dir(tmp_path: Path) -> Path:
    gemma_style_tokenizer(tmp_path / "gemma-like")
    return tmp_path / "gemma-like"


def test_engine_kwargs_exact_from_config() -> None:
    from evarl.generation.vllm_backend import engine_kwargs

    cfg = load_config(
        None,
        [
            "generation.backend=vllm",
            "generation.tensor_parallel_size=4",
            "generation.gpu_memory_utilization=0.5",
            "generation.max_model_len=4096",
            "generation.enable_prefix_caching=false",
            "generation.vllm_seed=7",
            "generation.dtype=bfloat16",
            "model.trust_remote_code=true",
        ],
    )
    assert engine_kwargs(cfg, "/ckpt/round-1") == {
        "model": "/ckpt/round-1",
        "tokenizer": "/ckpt/round-1",
        "dtype": "bfloat16",
        "trust_remote_code": True,
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.5,
        "max_model_len": 4096,
        "enable_prefix_caching": False,
        "seed": 7,
        "enable_sleep_mode": True,
    }
    # defaults: generation.dtype auto (vLLM's own "auto": the checkpoint's dtype, bf16 for current chat models),
    # context length the model's (None); without a generation dtype, model.dtype
    assert engine_kwargs(load_config(None, ["generation.dtype=null"]), "/m")["dtype"] == "float32"
    d = engine_kwargs(load_config(None, ["generation.backend=vllm"]), "/m")
    assert (d["dtype"], d["max_model_len"], d["tensor_parallel_size"], d["enable_prefix_caching"]) == (
        "auto",
        None,
        1,
        True,
    )
    assert d["gpu_memory_utilization"] == 0.85 and d["seed"] == 0 and d["trust_remote_code"] is False


def test_from_config_builds_the_engine_with_those_kwargs(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator, engine_kwargs

    mod, _ = fake_vllm
    cfg = load_config(None, ["generation.backend=vllm", "generation.tensor_parallel_size=2"])
    g = VLLMGenerator.from_config(cfg, str(gemma_dir))
    assert g.llm.kwargs == engine_kwargs(cfg, str(gemma_dir))
    assert isinstance(g, Releasable)


def test_token_id_prompts_single_bos_and_equal_to_trainer_ids(fake_vllm, gemma_dir) -> None:
    from transformers import AutoTokenizer

    from evarl.chat import render_chat
    from evarl.generation.vllm_backend import VLLMGenerator
    from evarl.truncation import encode_prompt

    mod, _ = fake_vllm
    tok = AutoTokenizer.from_pretrained(gemma_dir)
    bos, eot = tok.convert_tokens_to_ids("<bos>"), tok.convert_tokens_to_ids("<end_of_turn>")
    conv = [{"role": "user", "content": "hi there"}]
    text = render_chat(tok, conv)
    assert text.startswith("<bos>")
    assert tok(text)["input_ids"][:2] == [bos, bos]  # the double BOS that handing vLLM text would give

    g = VLLMGenerator(str(gemma_dir), {"model": str(gemma_dir), "enable_sleep_mode": True})
    out = g.generate([conv, [{"role": "user", "content": "how are you"}]], SamplingParams(n=2, seed=3))
    prompts, sps = g.llm.last
    ids = prompts[0]["prompt_token_ids"]
    assert ids.count(bos) == 1 and ids[0] == bos
    assert ids == tok(text, add_special_tokens=False)["input_ids"] == encode_prompt(tok, conv, 1024)
    assert set(prompts[0]) == {"prompt_token_ids"}  # no text goes to vLLM
    # one SamplingParams per prompt, seeded by (call seed, position); stop on EOS and <end_of_turn>
    assert [sp.kw["seed"] for sp in sps] == [3 * 1_000_003, 3 * 1_000_003 + 1]
    assert sps[0].kw == {
        "n": 2,
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 96,
        "seed": 3 * 1_000_003,
        "stop_token_ids": sorted([tok.eos_token_id, eot]),
    }
    a, b = out[0]
    assert (a.text, a.num_tokens, a.finish_reason, a.token_ids, a.logprobs) == (
        "a b",
        2,
        "stop",
        [10, 11, eot],
        None,
    )
    assert (b.text, b.num_tokens, b.finish_reason) == ("a a a", 3, "length")


def test_same_call_same_requests_and_greedy(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator(str(gemma_dir))
    conv = [[{"role": "user", "content": "hi"}]]
    g.generate(conv, SamplingParams(n=1, temperature=0.0, seed=5))
    first = [(p, sp.kw) for p, sp in zip(*g.llm.last)]
    g.generate(conv, SamplingParams(n=1, temperature=0.0, seed=5))
    assert first == [(p, sp.kw) for p, sp in zip(*g.llm.last)]
    assert first[0][1]["temperature"] == 0.0 and first[0][1]["top_p"] == 1.0


def test_sampled_logprobs_when_asked(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator(str(gemma_dir), return_logprobs=True)
    out = g.generate([[{"role": "user", "content": "hi"}]], SamplingParams(n=1))
    assert g.llm.last[1][0].kw["logprobs"] == 0
    assert out[0][0].logprobs == [-0.5, -1.0, -0.25]


def test_prompt_budget_left_truncates_to_max_model_len(fake_vllm, gemma_dir) -> None:
    from evarl.chat import render_chat
    from evarl.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator(str(gemma_dir), {"max_model_len": 10})
    conv = [{"role": "user", "content": "hi there how are you a b a b a b"}]
    g.generate([conv], SamplingParams(n=1, max_new_tokens=4))
    ids = g.llm.last[0][0]["prompt_token_ids"]
    full = g.tokenizer(render_chat(g.tokenizer, conv), add_special_tokens=False)["input_ids"]
    # the one truncation policy (evarl.truncation): the start of the instruction goes; BOS, the role tokens,
    # the instruction's end and the assistant header survive
    assert len(ids) <= 6 < len(full) and ids[0] == full[0] and ids[-3:] == full[-3:]
    assert ids == g.encode([conv], max_new_tokens=4)[0]


def test_release_then_wake_same_weights_level1(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    _, calls = fake_vllm
    g = VLLMGenerator(str(gemma_dir), {"enable_sleep_mode": True})
    calls.clear()
    g.release(keep_weights=True)
    assert calls == [("sleep", 1)] and g.asleep == 1
    g.release()  # already asleep: nothing
    g.wake()
    assert calls == [("sleep", 1), ("wake_up", None)] and g.asleep is None


def _save_checkpoint(d: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(d / "model.safetensors"))


def test_release_and_wake_on_a_new_checkpoint_loads_its_weights(fake_vllm, gemma_dir, tmp_path) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    mod, calls = fake_vllm
    g = VLLMGenerator(str(gemma_dir), {"enable_sleep_mode": True})
    engine = g.llm
    new = tmp_path / "round-001" / "model"
    tensors = {"model.embed_tokens.weight": torch.randn(4, 3), "model.norm.weight": torch.ones(3)}
    _save_checkpoint(new, tensors)
    calls.clear()
    g.release()  # before training: level 2, the weights will change
    assert calls == [("sleep", 2)]
    g.wake(str(new))  # after training
    assert calls == [
        ("sleep", 2),
        ("wake_up", ("weights",)),
        ("apply_model",),
        ("wake_up", ("kv_cache",)),
        ("reset_prefix_cache",),
    ]
    assert g.llm is engine and g.path == str(new) and g.asleep is None  # same engine, no rebuild
    assert set(engine.model.loaded) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(engine.model.loaded[k], v)


def test_wake_rebuilds_when_the_checkpoint_cannot_be_streamed(fake_vllm, gemma_dir, tmp_path) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    mod, calls = fake_vllm
    g = VLLMGenerator(str(gemma_dir), {"enable_sleep_mode": True, "dtype": "bfloat16"})
    g.release()
    empty = tmp_path / "no-safetensors"
    empty.mkdir()
    g.wake(str(empty))
    assert g.llm is mod.LLM.instances[-1] and len(mod.LLM.instances) == 2
    assert g.llm.kwargs == {"model": str(empty), "tokenizer": str(empty), "enable_sleep_mode": True,
                            "dtype": "bfloat16"}  # fmt: skip


def test_without_sleep_mode_release_deletes_and_wake_rebuilds(fake_vllm, gemma_dir, tmp_path) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    mod, calls = fake_vllm
    g = VLLMGenerator(str(gemma_dir), {"enable_sleep_mode": False})
    g.release()
    assert g.llm is None and not any(c[0] == "sleep" for c in calls)
    g.wake(str(tmp_path / "next"))
    assert g.llm.kwargs["model"] == str(tmp_path / "next") and g.path == str(tmp_path / "next")


def test_sleep_failure_falls_back_to_delete(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    mod, _ = fake_vllm
    g = VLLMGenerator(str(gemma_dir), {"enable_sleep_mode": True})

    def boom(level=1):
        raise RuntimeError("sleep mode is not supported on this platform")

    g.llm.sleep = boom
    g.release()
    assert g.llm is None
    g.generate([[{"role": "user", "content": "hi"}]], SamplingParams(n=1))  # wakes (rebuilds) on demand
    assert len(mod.LLM.instances) == 2


def test_sync_weights_pushes_every_tensor_and_resets_prefix_cache(fake_vllm, gemma_dir, monkeypatch) -> None:
    import evarl.generation.vllm_backend as vb

    _, calls = fake_vllm
    monkeypatch.setattr(vb, "SYNC_BUCKET_BYTES", 64)  # several buckets
    g = vb.VLLMGenerator(str(gemma_dir))
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    calls.clear()
    n = g.sync_weights(m.named_parameters())
    names = [k for k, _ in m.named_parameters()]
    assert n == len(names) == 4
    assert set(g.llm.model.loaded) == set(names)
    for k, v in m.named_parameters():
        assert torch.equal(g.llm.model.loaded[k], v.detach())
    assert calls.count(("apply_model",)) > 1 and calls[-1] == ("reset_prefix_cache",)


def test_sync_weights_through_collective_rpc_without_apply_model(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    mod, _ = fake_vllm
    del mod.LLM.apply_model
    seen = {}

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        worker = types.SimpleNamespace(get_model=lambda: self.model)
        seen["method"] = method
        return [method(worker, *args, **(kwargs or {}))]

    mod.LLM.collective_rpc = collective_rpc
    g = VLLMGenerator(str(gemma_dir))
    g.sync_weights([("w", torch.ones(2))])
    assert torch.equal(g.llm.model.loaded["w"], torch.ones(2)) and callable(seen["method"])


def test_token_logps_reads_prompt_logprobs_of_the_response(fake_vllm, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator(str(gemma_dir))
    got = g.token_logps([[1, 5, 6], [1]], [[7, 8], [9]])
    prompts, sp = g.llm.last
    assert prompts == [{"prompt_token_ids": [1, 5, 6, 7, 8]}, {"prompt_token_ids": [1, 9]}]
    assert sp.kw == {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
    # the stand-in gives position k (k >= 1) log-prob -0.1 * k
    assert got == [pytest.approx([-0.3, -0.4]), pytest.approx([-0.1])]


def test_missing_vllm_says_how_to_install(monkeypatch, gemma_dir) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="evarl\\[vllm\\]"):
        VLLMGenerator(str(gemma_dir))
