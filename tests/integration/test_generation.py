"""HF backend on a real (tiny random) Llama with SmolLM2's tokenizer: batching, n samples, seeding, and the
chunked generation stage resuming after a crash to the same bytes."""

from pathlib import Path

import pytest

from evarl.generation.base import SamplingParams
from evarl.generation.hf import HFGenerator
from evarl.loop import generate_stage
from evarl.types import Prompt


@pytest.fixture(scope="module")
def gen(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.from_path(str(tiny_model_dir), batch_size=8)


def _prompts(k: int) -> list[Prompt]:
    return [
        Prompt(f"p{i}", [{"role": "user", "content": f"Tell me about the number {i}."}]) for i in range(k)
    ]


def test_n_samples_seeded_and_bounded(gen: HFGenerator) -> None:
    convs = [p.messages for p in _prompts(3)]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=5)
    a = gen.generate(convs, params)
    assert len(a) == 3 and all(len(row) == 3 for row in a)
    assert all(o.num_tokens <= 8 for row in a for o in row)
    assert a == gen.generate(convs, params)  # same seed, same samples
    b = gen.generate(convs, SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=6))
    assert a != b
    greedy = gen.generate(convs[:1], SamplingParams(n=2, temperature=0.0, max_new_tokens=8))
    assert greedy[0][0].text == greedy[0][1].text


def test_generate_stage_resumes_to_identical_file(gen: HFGenerator, tmp_path: Path, monkeypatch) -> None:
    prompts = _prompts(20)
    params = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1)
    full = tmp_path / "full.jsonl"
    generate_stage(gen, prompts, params, full, chunk_prompts=8)  # 3 chunks

    calls = {"n": 0}
    real = gen.generate

    def crash_after_two(convs, p):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("simulated kill")
        return real(convs, p)

    part = tmp_path / "resumed.jsonl"
    monkeypatch.setattr(gen, "generate", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_stage(gen, prompts, params, part, chunk_prompts=8)
    assert not part.exists() and (tmp_path / "resumed.partial.jsonl").exists()
    # a kill can also cut the last line in half
    with open(tmp_path / "resumed.partial.jsonl", "a") as f:
        f.write('{"prompt_id": "p1')
    monkeypatch.setattr(gen, "generate", real)
    counts = generate_stage(gen, prompts, params, part, chunk_prompts=8)
    assert counts["responses"] == 40
    assert part.read_bytes() == full.read_bytes()
