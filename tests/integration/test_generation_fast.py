"""The new `hf` backend on real models: per-sequence determinism (packing, batch size and the other prompts of a
call do not change a prompt's samples), greedy equal to transformers' `generate`, the sampled first-token
distribution equal to softmax(logits / T) in the top-p nucleus, stop handling, and dtype `auto`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evarl.chat import render_chat
from evarl.generation.base import SamplingParams
from evarl.generation.hf import HFGenerator, StaticHFGenerator, generation_dtype
from evarl.registry import BACKENDS


def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PROMPTS = [
    _conv("Tell me about the number 3."),
    _conv("Write a short poem about rivers and the sea, in three lines, without rhymes."),
    _conv("Hi"),
    _conv("Explain what a hash map is, and when a sorted array is the better choice."),
]
OTHERS = [_conv("What is the capital of France? Answer in one word."), _conv("Count to five.")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.from_path(str(tiny_model_dir), batch_size=8)


def test_backends_are_registered(tiny: HFGenerator) -> None:
    assert BACKENDS.get("hf") is HFGenerator and BACKENDS.get("hf-static") is StaticHFGenerator
    assert type(tiny) is HFGenerator and tiny.name == "hf"


def test_samples_do_not_depend_on_packing(tiny: HFGenerator) -> None:
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=4)
    base = tiny.generate(PROMPTS, params)
    assert len(base) == 4 and all(len(row) == 3 for row in base)
    assert len({o.text for row in base for o in row}) > 6  # samples of a prompt differ
    for batch_size in (1, 3, 64):
        other = HFGenerator(tiny.model, tiny.tokenizer, batch_size=batch_size)
        assert other.generate(PROMPTS, params) == base, batch_size
    # other prompts in the same call (longer and shorter ones: the length-sorted packing changes)
    assert tiny.generate(PROMPTS + OTHERS, params)[:4] == base
    # a prompt's samples depend on its position in the call, not on its neighbours
    swapped = tiny.generate([PROMPTS[0], OTHERS[0], PROMPTS[2]], params)
    assert swapped[0] == base[0] and swapped[2] == base[2]
    assert tiny.generate(PROMPTS, params) == base
    assert tiny.generate(PROMPTS, SamplingParams(3, 1.0, 0.9, 12, seed=5)) != base


def _hf_greedy(gen: HFGenerator, conv: list[dict[str, str]], max_new_tokens: int) -> list[int]:
    tok = gen.tokenizer
    enc = tok(render_chat(tok, conv), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        seq = gen.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=gen._eos_ids(),
            pad_token_id=tok.pad_token_id,
        )
    ids = seq[0, enc["input_ids"].shape[1] :].tolist()
    eos = set(gen._eos_ids())
    return ids[: next((k for k, t in enumerate(ids) if t in eos), len(ids))]


def _check_greedy(gen: HFGenerator, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> None:
    out = gen.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=max_new_tokens))
    for conv, row in zip(prompts, out):
        ref = _hf_greedy(gen, conv, max_new_tokens)
        text = gen.tokenizer.decode(ref, skip_special_tokens=True).strip()
        assert [(o.text, o.num_tokens) for o in row] == [(text, len(ref))] * 2
        assert row[0].finish_reason == ("length" if len(ref) == max_new_tokens else "stop")


def test_greedy_equals_transformers_generate_on_the_tiny_llama(tiny: HFGenerator) -> None:
    _check_greedy(tiny, PROMPTS, 20)


@pytest.fixture(scope="module")
def smol(smollm2_dir: Path) -> HFGenerator:
    return HFGenerator.from_path(str(smollm2_dir), dtype="float32", batch_size=8)


def test_greedy_equals_transformers_generate_on_smollm2(smol: HFGenerator) -> None:
    gen = smol
    _check_greedy(gen, [PROMPTS[0], PROMPTS[2], PROMPTS[1]], 24)
    # SmolLM2 answers "Hi" briefly: a sample that ends on <|im_end|> is a stop with fewer tokens
    out = gen.generate([PROMPTS[2]], SamplingParams(n=1, temperature=0.0, max_new_tokens=64))
    assert out[0][0].finish_reason == "stop" and 0 < out[0][0].num_tokens < 64


def test_first_token_distribution_is_softmax_over_the_nucleus(smol: HFGenerator) -> None:
    """n samples of one token for one prompt (one prefill, the cache repeated n times) against the model's own
    first-step distribution after temperature and top-p: chi-square, and nothing outside the nucleus.
    SmolLM2, whose first-token distribution has a real head and tail (the random tiny Llama's is flat)."""
    from evarl.generation.fast import decode

    tok, model = smol.tokenizer, smol.model
    t, top_p, n = 1.0, 0.9, 600
    ids = tok(render_chat(tok, _conv("Give me a random word.")), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        probs = (model(torch.tensor([ids])).logits[0, -1].float() / t).softmax(-1)
        out = decode(model, [ids], n, t, top_p, 1, 0, [], tok.pad_token_id)[0]
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    nucleus = order[before < top_p]
    p = torch.zeros_like(probs)
    p[nucleus] = probs[nucleus] / probs[nucleus].sum()
    drawn = torch.tensor([toks[0] for toks, _ in out])
    assert set(drawn.tolist()) <= set(nucleus.tolist())  # never outside the nucleus
    counts = torch.bincount(drawn, minlength=p.numel()).double()
    exp = p.double() * n
    big = exp >= 5  # the rare ones pooled into one cell
    chi2 = (((counts - exp) ** 2 / exp)[big]).sum().item()
    rest_exp, rest_obs = exp[~big].sum().item(), counts[~big].sum().item()
    dof = int(big.sum()) - 1
    if rest_exp >= 5:
        chi2 += (rest_obs - rest_exp) ** 2 / rest_exp
        dof += 1
    assert dof >= 15
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, (chi2, dof)


def test_length_and_stop(tiny: HFGenerator) -> None:
    out = tiny.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0))
    for row in out:
        for o in row:
            assert o.num_tokens <= 5
            assert o.finish_reason == ("length" if o.num_tokens == 5 else "stop")


def test_dtype_auto() -> None:
    from evarl.generation.hf import cpu_has_native_bf16

    assert generation_dtype("float32") == "float32" and generation_dtype("bfloat16") == "bfloat16"
    assert generation_dtype("auto", "cpu") == ("bfloat16" if cpu_has_native_bf16() else "float32")


def test_bf16_generation_runs(tiny_model_dir: Path) -> None:
    gen = HFGenerator.from_path(str(tiny_model_dir), dtype="bfloat16", batch_size=8)
    assert next(gen.model.parameters()).dtype == torch.bfloat16
    out = gen.generate(PROMPTS[:2], SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=1))
    assert all(o.num_tokens <= 6 for row in out for o in row)
    assert out == gen.generate(PROMPTS[:2], SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=1))
