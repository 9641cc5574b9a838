"""The training EOS is the chat template's end-of-turn token: SmolLM2 (ChatML, `<|im_end|>` = its EOS, so
nothing changes) and a Gemma-style copy of its tokenizer (`<end_of_turn>`, not the EOS). Responses are encoded
with it, and generation stops on it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from evarl.chat import end_of_turn_id, render_chat
from evarl.generation.base import SamplingParams
from evarl.generation.hf import HFGenerator
from evarl.models.loading import load_tokenizer
from evarl.solver.logprobs import encode_pair, encode_response

GEMMA_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def smol_tok(smollm2_dir: Path) -> Any:
    return load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="module")
def gemma_tok(smol_tok: Any) -> Any:
    """SmolLM2's tokenizer with a Gemma chat template and its turn markers as special tokens."""
    tok = copy.deepcopy(smol_tok)
    tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def test_smollm2_end_of_turn_is_its_eos(smol_tok: Any):
    assert smol_tok.eos_token == "<|im_end|>"
    assert end_of_turn_id(smol_tok) == smol_tok.eos_token_id
    ids = encode_response(smol_tok, "Hello there.", 64)
    assert ids == smol_tok("Hello there.", add_special_tokens=False)["input_ids"] + [smol_tok.eos_token_id]


def test_gemma_style_end_of_turn_is_not_the_eos(gemma_tok: Any):
    eot = gemma_tok.convert_tokens_to_ids("<end_of_turn>")
    assert eot != gemma_tok.eos_token_id
    assert end_of_turn_id(gemma_tok) == eot
    ids = encode_response(gemma_tok, "Hello there.", 64)
    assert ids[-1] == eot and gemma_tok.eos_token_id not in ids
    # the encoded pair is the template's own rendering of the turn, up to the newline after <end_of_turn>
    prompt = [{"role": "user", "content": "Say hello."}]
    enc = encode_pair(gemma_tok, prompt, "Hello there.", "Hi.", 128, 256)
    full = gemma_tok.apply_chat_template(
        [*prompt, {"role": "assistant", "content": "Hello there."}], tokenize=False
    )
    assert gemma_tok.decode(enc.prompt_ids + enc.chosen_ids) == full.rstrip("\n")
    assert render_chat(gemma_tok, prompt).endswith("<start_of_turn>model\n")


def test_fallbacks_and_cache(smol_tok: Any, gemma_tok: Any, monkeypatch):
    plain = copy.deepcopy(smol_tok)
    plain.chat_template = None
    assert end_of_turn_id(plain) == plain.eos_token_id  # no template: the EOS
    no_marker = copy.deepcopy(smol_tok)
    no_marker.chat_template = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
    assert end_of_turn_id(no_marker) == no_marker.eos_token_id  # plain text after the reply: the EOS
    broken = copy.deepcopy(smol_tok)
    broken.chat_template = "{{ raise_exception('no assistant turns') }}"
    assert end_of_turn_id(broken) == broken.eos_token_id

    tok = copy.deepcopy(gemma_tok)
    calls = {"n": 0}
    real = tok.apply_chat_template

    def counting(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(tok, "apply_chat_template", counting)
    first = end_of_turn_id(tok)
    for _ in range(3):
        assert end_of_turn_id(tok) == first
    assert calls["n"] == 1  # rendered once per tokenizer
    tok.chat_template = smol_tok.chat_template  # a changed template is noticed
    assert end_of_turn_id(tok) != first


class _Scripted(torch.nn.Module):
    """Emits a fixed continuation, to check where the generator cuts a sample."""

    generation_config = None

    def __init__(self, continuation: list[int]) -> None:
        super().__init__()
        self.continuation = continuation
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> torch.Tensor:
        rows = input_ids.shape[0] * kw["num_return_sequences"]
        prompt = input_ids.repeat_interleave(kw["num_return_sequences"], 0)
        return torch.cat([prompt, torch.tensor([self.continuation] * rows)], dim=1)


def test_generation_stops_on_the_end_of_turn_token(gemma_tok: Any, smol_tok: Any):
    eot = gemma_tok.convert_tokens_to_ids("<end_of_turn>")
    hello = gemma_tok("Hello", add_special_tokens=False)["input_ids"]
    gen = HFGenerator(_Scripted([*hello, eot, *hello, gemma_tok.eos_token_id]), gemma_tok, batch_size=4)
    assert eot in gen._eos_ids() and gemma_tok.eos_token_id in gen._eos_ids()
    out = gen.generate([[{"role": "user", "content": "Say hello."}]], SamplingParams(n=2, seed=0))
    assert [(o.text, o.num_tokens, o.finish_reason) for o in out[0]] == [("Hello", len(hello), "stop")] * 2
    # SmolLM2: the stop set is what it was before end-of-turn detection (EOS = <|im_end|>)
    assert HFGenerator(_Scripted([]), smol_tok)._eos_ids() == [smol_tok.eos_token_id]


def test_saved_gemma_style_tokenizer_keeps_its_end_of_turn(tmp_path: Path, gemma_tok: Any):
    """A model directory saved with the Gemma-style tokenizer: loading it from disk finds the same token, and
    a real (tiny, random) model computes reference log-probs that include it."""
    from evarl.config import SolverConfig
    from evarl.models.loading import build_tiny_llama, load_causal_lm
    from evarl.solver.logprobs import compute_reference_logps
    from evarl.types import Pair

    d = tmp_path / "gemma-tok"
    gemma_tok.save_pretrained(d)
    model_dir = build_tiny_llama(tmp_path / "tiny", str(d))
    tok = load_tokenizer(str(model_dir))
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_id(tok) == eot != tok.eos_token_id
    pair = Pair(
        prompt_id="p", prompt=[{"role": "user", "content": "Hi"}], chosen="Hello!", rejected="Go away."
    )
    cfg = SolverConfig()
    rows = compute_reference_logps(load_causal_lm(str(model_dir), device="cpu"), tok, [pair], cfg, 1)
    assert len(rows) == 1 and rows[0]["chosen_logp"] < 0
