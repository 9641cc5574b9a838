"""The one prompt-truncation policy (evarl.truncation) with SmolLM2's real tokenizer: the generation header and
the constraint text at the end of a long prompt survive, oldest turns go first, the system prompt stays, and
generation (hf, hf-static) and training (encode_pair) feed the model the same prompt ids. Cut prompts are
counted and recorded once per run stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from evarl.chat import render_chat
from evarl.truncation import encode_prompt, fit_prompt, take_truncated

HEADER = "<|im_end|>\n<|im_start|>assistant\n"
CONSTRAINT = "Answer in exactly 3 bullet points and end your response with 'Is there anything else?'"
FILLER = "The history of the river valley is long and full of small events. " * 60


@pytest.fixture(scope="module")
def tok(smollm2_dir: Path):
    from evarl.models.loading import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


@pytest.fixture(autouse=True)
def _reset_counter():
    take_truncated()
    yield
    take_truncated()


def _text(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def test_short_prompt_is_the_rendered_template_uncounted(tok) -> None:
    conv = [{"role": "user", "content": "Name a colour."}]
    ids, cut = fit_prompt(tok, conv, 256)
    assert not cut and ids == tok(render_chat(tok, conv), add_special_tokens=False)["input_ids"]
    assert take_truncated() == 0


def test_long_prompt_keeps_system_constraints_and_header(tok) -> None:
    conv = [{"role": "user", "content": FILLER + CONSTRAINT}]
    full = tok(render_chat(tok, conv), add_special_tokens=False)["input_ids"]
    ids, cut = fit_prompt(tok, conv, 128)
    text = _text(tok, ids)
    assert cut and len(full) > 128 >= len(ids) >= 110  # the room is used, not thrown away
    assert text.endswith(CONSTRAINT + HEADER)  # the constraints and the assistant header survive
    assert text.startswith("<|im_start|>system\n") and "SmolLM" in text  # the template's system prompt too
    assert "<|im_start|>user\n" in text
    assert take_truncated() == 1


def test_oldest_turns_go_first_explicit_system_kept(tok) -> None:
    conv = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question: " + FILLER[:1500]},
        {"role": "assistant", "content": "First answer: " + FILLER[:1500]},
        {"role": "user", "content": "Now the real task. " + CONSTRAINT},
    ]
    ids, cut = fit_prompt(tok, conv, 120)
    text = _text(tok, ids)
    assert cut and len(ids) <= 120
    assert "You are terse." in text and "First question" not in text and "First answer" not in text
    assert text.endswith("Now the real task. " + CONSTRAINT + HEADER)  # the last turn whole: it fits


def test_overlong_system_prompt_leaves_room_for_the_instruction(tok) -> None:
    conv = [{"role": "system", "content": "Rule. " * 400}, {"role": "user", "content": FILLER + CONSTRAINT}]
    ids, _ = fit_prompt(tok, conv, 96)
    text = _text(tok, ids)
    assert len(ids) <= 96 and text.endswith(CONSTRAINT + HEADER) and "Rule." in text


def test_budget_below_the_template_keeps_the_header(tok) -> None:
    ids, cut = fit_prompt(tok, [{"role": "user", "content": "hello there"}], 6)
    assert cut and len(ids) == 6 and _text(tok, ids).endswith(HEADER)
    with pytest.raises(ValueError, match="budget"):
        fit_prompt(tok, [{"role": "user", "content": "x"}], 0)


def test_generation_and_training_use_the_same_prompt_ids(tok, tiny_model_dir, monkeypatch) -> None:
    """hf (KV-cache loop) and hf-static give the model exactly the ids the trainer puts before a response."""
    import evarl.generation.fast as fast
    from evarl.generation.base import SamplingParams
    from evarl.generation.hf import HFGenerator, StaticHFGenerator
    from evarl.solver.logprobs import encode_pair

    budget = 100
    conv = [{"role": "user", "content": FILLER + CONSTRAINT}]
    train_ids = encode_pair(
        tok, conv, "Sure.", "No.", max_prompt_length=budget, max_length=budget + 40
    ).prompt_ids
    assert train_ids == encode_prompt(tok, conv, budget) and len(train_ids) <= budget

    seen: dict[str, list[int]] = {}
    real_decode = fast.decode

    def spy(model, prompt_ids, *a, **kw):
        seen["hf"] = list(prompt_ids[0])
        return real_decode(model, prompt_ids, *a, **kw)

    monkeypatch.setattr(fast, "decode", spy)
    gen = HFGenerator.from_path(str(tiny_model_dir), batch_size=2)
    gen.max_prompt_tokens = budget
    gen.generate([conv], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    assert seen["hf"] == train_ids

    static = StaticHFGenerator(gen.model, gen.tokenizer, batch_size=2, max_prompt_tokens=budget)
    real_generate = static.model.generate

    def spy_generate(**kw):
        ids = kw["input_ids"][0][kw["attention_mask"][0].bool()].tolist()
        seen["static"] = ids
        return real_generate(**kw)

    monkeypatch.setattr(static.model, "generate", spy_generate)
    static.generate([conv], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    assert seen["static"] == train_ids
    assert take_truncated() == 4  # the training encode, the direct encode and the two generators


def test_run_stage_records_and_warns_once(tok, tmp_path, capsys) -> None:
    from evarl.config import load_config
    from evarl.runs import Run

    run = Run(load_config(None, [f"output_dir={tmp_path / 'runs'}", "name=t"])).open()
    long = [{"role": "user", "content": FILLER + CONSTRAINT}]

    def stage() -> dict[str, int]:
        for _ in range(3):
            encode_prompt(tok, long, 64)
        encode_prompt(tok, [{"role": "user", "content": "short"}], 64)
        return {"prompts": 4}

    entry = run.stage("round-001/generate", stage)
    assert entry["counts"] == {"prompts": 4, "prompts_truncated": 3}
    err = capsys.readouterr().err
    assert err.count("3 prompt(s) longer than their token budget were cut") == 1
    entry = run.stage("round-001/score", lambda: {"prompts": 4})
    assert "prompts_truncated" not in entry["counts"]
