"""SFT on the solver engine: data formats with file:line errors, response-only loss, learning, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evarl.config import SolverConfig
from evarl.io import DataError
from evarl.models.loading import load_causal_lm, load_tokenizer
from evarl.solver.logprobs import collate_sequences, encode_prompt, encode_response, response_logps
from evarl.solver.sft import SFTExample, load_sft_examples, sft_example_from_row, train_sft
from evarl.solver.trainer import FAIL_ENV, SimulatedKill

ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Name a colour number {i}."},
            {"role": "assistant", "content": "Blue."},
        ]
    }
    for i in range(4)
] + [
    {"prompt": "Evaluate: 2+2=4. Score it.", "completion": "Score: 5"},
    {
        "prompt": [{"role": "user", "content": "Say hi"}],
        "completion": [{"role": "assistant", "content": "Hi!"}],
    },
]


def cfg(**kw) -> SolverConfig:
    base = dict(
        learning_rate=3e-3,
        batch_size=2,
        epochs=3,
        warmup_ratio=0.0,
        scheduler="constant",
        max_length=48,
        max_prompt_length=40,
        save_every=0,
    )
    base.update(kw)
    return SolverConfig(**base)


def test_formats_and_errors(tmp_path: Path) -> None:
    multi = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    e = sft_example_from_row(multi)
    assert e.completion == "d" and [m["content"] for m in e.prompt] == ["Be brief.", "a", "b", "c"]
    assert sft_example_from_row(ROWS[4]) == SFTExample(
        [{"role": "user", "content": ROWS[4]["prompt"]}], "Score: 5"
    )
    assert sft_example_from_row(ROWS[5]).completion == "Hi!"
    f = tmp_path / "sft.jsonl"
    f.write_text(
        json.dumps(ROWS[0]) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n"
    )
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'messages': no assistant turn"):
        load_sft_examples(f)
    with pytest.raises(DataError, match="field 'completion'"):
        sft_example_from_row({"prompt": "p", "completion": ""})
    with pytest.raises(DataError, match="expected a 'messages' list"):
        sft_example_from_row({"text": "x"})


def _completion_nll(model_dir: Path, examples: list[SFTExample]) -> float:
    tok = load_tokenizer(str(model_dir))
    model = load_causal_lm(str(model_dir))
    ps = [encode_prompt(tok, e.prompt, 40) for e in examples]
    rs = [encode_response(tok, e.completion, 48 - len(p)) for p, e in zip(ps, examples)]
    b = collate_sequences(ps, rs, tok.pad_token_id)
    with torch.no_grad():
        s, n = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
    return float(-s.sum() / n.sum())


def test_sft_learns_the_completions(tiny_model_dir: Path, tmp_path: Path) -> None:
    exs = [sft_example_from_row(r) for r in ROWS]
    before = _completion_nll(tiny_model_dir, exs)
    summary = train_sft(str(tiny_model_dir), ROWS, cfg(), tmp_path, seed=0, progress=False)
    after = _completion_nll(tmp_path / "model", exs)
    assert summary["kind"] == "sft" and summary["steps"] == 9
    assert after < before - 1.0, (before, after)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]


def test_sft_loss_equals_hf_loss_with_prompt_masked(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir))
    e = sft_example_from_row(ROWS[0])
    p, r = encode_prompt(tok, e.prompt, 40), encode_response(tok, e.completion, 40)
    b = collate_sequences([p], [r], tok.pad_token_id)
    with torch.no_grad():
        s, n = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
        labels = b["input_ids"].masked_fill(~b["response_mask"], -100)
        hf = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels).loss
        unmasked = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"]
        ).loss
    assert int(n) == len(r)
    assert float(-s.sum() / n) == pytest.approx(float(hf), abs=1e-5)
    assert abs(float(hf) - float(unmasked)) > 1e-3  # the prompt really is excluded


def test_sft_resume_is_bitwise_identical(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cfg(save_every=2, batch_size=1, grad_accum=2, epochs=1)
    train_sft(str(tiny_model_dir), ROWS, c, tmp_path / "a", seed=3, progress=False)
    monkeypatch.setenv(FAIL_ENV, "3")
    with pytest.raises(SimulatedKill):
        train_sft(str(tiny_model_dir), ROWS, c, tmp_path / "b", seed=3, progress=False)
    monkeypatch.delenv(FAIL_ENV)
    s = train_sft(str(tiny_model_dir), ROWS, c, tmp_path / "b", seed=3, progress=False)
    assert s["resumed_from_step"] == 2
    wa = load_file(str(next((tmp_path / "a" / "model").glob("*.safetensors"))))
    wb = load_file(str(next((tmp_path / "b" / "model").glob("*.safetensors"))))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
