"""The vLLM backend against a stand-in `vllm` module (no GPU here): the request it builds and the parsing."""

import sys
import types

from evarl.generation.base import SamplingParams


class _Tok:
    chat_template = None


def test_vllm_backend_builds_requests_and_parses(monkeypatch) -> None:
    seen = {}

    class SP:
        def __init__(self, **kw):
            seen["sp"] = kw

    class LLM:
        def __init__(self, **kw):
            seen["llm"] = kw

        def get_tokenizer(self):
            return _Tok()

        def generate(self, texts, sp, use_tqdm=False):
            seen["texts"] = texts
            comp = [
                types.SimpleNamespace(
                    text=f" a{j} ", token_ids=[1] * (j + 1), finish_reason="stop" if j else "length"
                )
                for j in range(2)
            ]
            return [types.SimpleNamespace(outputs=comp) for _ in texts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SP))
    from evarl.generation.vllm_backend import VLLMGenerator

    g = VLLMGenerator("/models/x", "bfloat16")
    out = g.generate(
        [[{"role": "user", "content": "hi"}]],
        SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=5, seed=3),
    )
    assert seen["llm"]["model"] == "/models/x" and seen["llm"]["dtype"] == "bfloat16"
    assert seen["sp"] == {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "seed": 3}
    assert seen["texts"] == ["hi\n\n"]
    assert [(o.text, o.num_tokens, o.finish_reason) for o in out[0]] == [
        ("a0", 1, "length"),
        ("a1", 2, "stop"),
    ]
