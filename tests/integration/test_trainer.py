"""The offline solver on a real (tiny, random) Llama with SmolLM2's tokenizer and chat template.

- response-only log-probs equal a plain full-logits computation; truncation keeps the assistant header;
- every loss moves the chosen/rejected log-ratio margin up in a few steps;
- a run killed after step 5 (checkpoint at 4) and rerun ends bitwise identical to an uninterrupted run,
  for full fine-tuning with gradient accumulation and for LoRA with dropout (RNG restored);
- a finished output is returned without retraining; bad inputs fail with clear errors.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evarl.config import LoraConfig, SolverConfig
from evarl.models.loading import load_causal_lm, load_tokenizer
from evarl.solver.logprobs import (
    collate_pairs,
    collate_pairs_shared,
    compute_reference_logps,
    encode_pair,
    encode_pairs,
    pair_logps,
    response_logps,
)
from evarl.solver.losses import needs_reference
from evarl.solver.trainer import FAIL_ENV, SimulatedKill, epoch_plan, lr_multiplier, train_preference
from evarl.types import Pair

TOPICS = ["cats", "rivers", "chess", "bread", "stars", "trains", "tea", "maps"]


def make_pairs() -> list[Pair]:
    return [
        Pair(
            prompt_id=f"p{i}",
            prompt=[{"role": "user", "content": f"Write one sentence about {t}."}],
            chosen=f"{t.capitalize()} are wonderful and worth learning about." + " Truly." * (i % 3),
            rejected="no" + " no" * (i % 4),
            meta={"chosen_win_prob": 0.8, "rejected_win_prob": 0.3},
        )
        for i, t in enumerate(TOPICS)
    ]


def small_cfg(**kw) -> SolverConfig:
    base = dict(
        learning_rate=2e-3,
        batch_size=2,
        grad_accum=1,
        epochs=1,
        warmup_ratio=0.0,
        scheduler="constant",
        max_length=64,
        max_prompt_length=48,
        save_every=0,
        beta=0.1,
    )
    base.update(kw)
    return SolverConfig(**base)


@pytest.fixture(scope="module")
def ref_rows(tiny_model_dir: Path) -> list[dict]:
    model = load_causal_lm(str(tiny_model_dir))
    return compute_reference_logps(model, load_tokenizer(str(tiny_model_dir)), make_pairs(), small_cfg(), 3)


def margin(model_dir: Path, ref: list[dict], cfg: SolverConfig) -> float:
    """mean[(log pi(y+) - log pi_0(y+)) - (log pi(y-) - log pi_0(y-))] over the training pairs."""
    rows = compute_reference_logps(
        load_causal_lm(str(model_dir)), load_tokenizer(str(model_dir)), make_pairs(), cfg, 4
    )
    return sum(
        (a["chosen_logp"] - r["chosen_logp"]) - (a["rejected_logp"] - r["rejected_logp"])
        for a, r in zip(rows, ref)
    ) / len(ref)


# ---------------------------------------------------------------- tokenisation and log-probs


def test_response_only_logps_match_full_logits(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir))
    enc = encode_pairs(tok, make_pairs()[:3], 48, 64)
    b = collate_pairs(enc, tok.pad_token_id)
    with torch.no_grad():
        sums, lengths = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
    tok_lp = logits[:, :-1].log_softmax(-1).gather(2, b["input_ids"][:, 1:, None]).squeeze(2)
    full = (tok_lp * b["response_mask"][:, 1:]).sum(1)
    assert torch.allclose(sums, full, atol=1e-4)
    assert lengths.tolist() == [len(e.chosen_ids) for e in enc] + [len(e.rejected_ids) for e in enc]
    assert all(e.chosen_ids[-1] == tok.eos_token_id for e in enc)


@pytest.fixture
def one_thread() -> object:
    """One torch thread: with two, the float32 reduction order of the 49k-vocab lm_head gradient varies by
    ~1e-4 on gradients of ~35 (seen when the chunking test runs alone, after tests that left 1 thread it passed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_chunked_lm_head_matches_single_chunk(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    import evarl.solver.logprobs as lp

    tok = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir))
    b = collate_pairs(encode_pairs(tok, make_pairs(), 48, 64), tok.pad_token_id)
    one = lp.pair_logps(model, b)[0]
    one.sum().backward()
    g1 = model.lm_head.weight.grad.clone()
    model.zero_grad()
    monkeypatch.setattr(lp, "LOGITS_CHUNK", 7)  # many chunks, recomputed in backward
    many = lp.pair_logps(model, b)[0]
    many.sum().backward()
    assert torch.allclose(one, many, atol=1e-5)
    assert torch.allclose(g1, model.lm_head.weight.grad, atol=1e-5)


def test_prompt_sharing_matches_separate_sequences(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir))
    pairs = make_pairs()
    pairs[3].prompt = [{"role": "user", "content": "A much longer prompt " * 6}]  # uneven prompt lengths
    enc = encode_pairs(tok, pairs, 48, 64)
    grads = []
    outs = []
    for collate in (collate_pairs, collate_pairs_shared):
        model.zero_grad()
        c, r, lc, lr = pair_logps(model, collate(enc, tok.pad_token_id))
        (c.sum() - 2 * r.sum()).backward()
        outs.append((c.detach(), r.detach(), lc, lr))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    (c1, r1, lc1, lr1), (c2, r2, lc2, lr2) = outs
    assert torch.allclose(c1, c2, atol=1e-4) and torch.allclose(r1, r2, atol=1e-4)
    assert torch.equal(lc1, lc2) and torch.equal(lr1, lr2)
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-4), n


def test_truncation_keeps_assistant_header_and_budget(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    long_prompt = [{"role": "user", "content": "word " * 200}]
    e = encode_pair(tok, long_prompt, "answer " * 100, "short", max_prompt_length=32, max_length=48)
    assert len(e.prompt_ids) == 32
    assert tok.decode(e.prompt_ids).endswith("<|im_start|>assistant\n")
    assert len(e.prompt_ids) + len(e.chosen_ids) == 48
    assert e.rejected_ids[-1] == tok.eos_token_id


def test_reference_rows_are_in_pair_order(tiny_model_dir: Path, ref_rows: list[dict]) -> None:
    assert [r["prompt_id"] for r in ref_rows] == [p.prompt_id for p in make_pairs()]
    model = load_causal_lm(str(tiny_model_dir))
    tok = load_tokenizer(str(tiny_model_dir))
    b = collate_pairs(encode_pairs(tok, make_pairs()[5:6], 48, 64), tok.pad_token_id)
    with torch.no_grad():
        c, r, _, _ = pair_logps(model, b)
    assert ref_rows[5]["chosen_logp"] == pytest.approx(c.item(), abs=1e-4)
    assert ref_rows[5]["rejected_logp"] == pytest.approx(r.item(), abs=1e-4)


# ---------------------------------------------------------------- schedule and data order


def test_lr_schedules() -> None:
    assert lr_multiplier(0, 10, 2, "cosine") == 0.0
    assert lr_multiplier(1, 10, 2, "linear") == 0.5
    assert lr_multiplier(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_multiplier(9, 10, 2, "constant") == 1.0


def test_epoch_plan_is_seeded_length_grouped_and_complete() -> None:
    lengths = [5, 50, 7, 40, 9, 30, 11, 20, 13]
    plan = epoch_plan(lengths, batch_size=2, grad_accum=2, seed=1, epoch=0)
    flat = [i for step in plan for mb in step for i in mb]
    assert sorted(flat) == list(range(9)) and len(plan) == 3
    # one window: the micro-batches are consecutive runs of the length-sorted order (length grouping)
    ranked = sorted(range(9), key=lambda i: -lengths[i])
    runs = [ranked[s : s + 2] for s in range(0, 9, 2)]
    assert sorted(mb for step in plan for mb in step) == sorted(runs)
    assert plan == epoch_plan(lengths, 2, 2, 1, 0)
    torch.manual_seed(123)  # global RNG must not matter
    assert plan == epoch_plan(lengths, 2, 2, 1, 0)
    big = list(range(200))
    assert epoch_plan(big, 2, 1, 1, 0) != epoch_plan(big, 2, 1, 1, 1)


# ---------------------------------------------------------------- every loss learns


LOSS_NAMES = ["dpo", "dpo-robust", "ipo", "hinge", "sppo", "sppo-hard", "simpo", "orpo", "dpo-nll"]
LOSS_KW = {
    "dpo-robust": {"label_smoothing": 0.1},
    "ipo": {"beta": 0.5},
    "sppo": {"beta": 0.5},
    "sppo-hard": {"beta": 0.5},
    "simpo": {"beta": 2.0, "gamma": 0.5},
    "orpo": {"lam": 1.0},
}


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_each_loss_grows_the_margin(
    loss: str, tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path
) -> None:
    cfg = small_cfg(loss=loss, epochs=2, **LOSS_KW.get(loss, {}))
    ref = ref_rows if needs_reference(loss) else None
    summary = train_preference(str(tiny_model_dir), make_pairs(), ref, cfg, tmp_path, seed=0, progress=False)
    assert summary["steps"] == 8 and summary["loss"] == loss
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert {"loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp", "lr"} <= set(log[0])
    assert margin(tmp_path / "model", ref_rows, cfg) > 0.5


def test_unshared_path_trains(tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path) -> None:
    cfg = small_cfg(share_prompt=False, epochs=2)
    train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, seed=0, progress=False)
    assert margin(tmp_path / "model", ref_rows, cfg) > 0.5


def test_options_bf16_checkpointing_rmsprop_linear_warmup(
    tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path
) -> None:
    cfg = small_cfg(
        mixed_precision="bf16",
        gradient_checkpointing=True,
        optimizer="rmsprop",
        learning_rate=5e-4,
        scheduler="linear",
        warmup_ratio=0.5,
        grad_accum=2,
        epochs=2,
    )
    summary = train_preference(
        str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, seed=1, progress=False
    )
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert summary["steps"] == 4 and log[0]["lr"] == 0.0 and log[2]["lr"] == pytest.approx(5e-4)
    assert margin(tmp_path / "model", ref_rows, cfg) > 0.0


def test_lora_is_merged_into_a_plain_model(
    tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path
) -> None:
    cfg = small_cfg(lora=LoraConfig(enabled=True, r=4, alpha=8, dropout=0.0), learning_rate=1e-2, epochs=2)
    train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, seed=0, progress=False)
    out = tmp_path / "model"
    assert not (out / "adapter_config.json").exists()
    keys = load_file(str(next(out.glob("*.safetensors")))).keys()
    assert not any("lora" in k for k in keys)
    assert margin(out, ref_rows, cfg) > 0.1


# ---------------------------------------------------------------- resume and determinism


def _weights(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("lora", [False, True])
def test_killed_run_resumes_bitwise_identical(
    lora: bool, tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lc = LoraConfig(enabled=lora, r=4, alpha=8, dropout=0.2)
    cfg = small_cfg(
        epochs=2, grad_accum=2, batch_size=1, save_every=2, lora=lc, scheduler="cosine", warmup_ratio=0.25
    )
    args = (str(tiny_model_dir), make_pairs(), ref_rows, cfg)
    ref_sum = train_preference(*args, tmp_path / "straight", seed=7, progress=False)

    monkeypatch.setenv(FAIL_ENV, "5")
    with pytest.raises(SimulatedKill):
        train_preference(*args, tmp_path / "killed", seed=7, progress=False)
    assert (tmp_path / "killed" / "state" / "latest").read_text() == "step-0000004"
    assert not (tmp_path / "killed" / "model").exists()
    monkeypatch.delenv(FAIL_ENV)
    resumed = train_preference(*args, tmp_path / "killed", seed=7, progress=False)
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == ref_sum["steps"] == 8

    a, b = _weights(tmp_path / "straight" / "model"), _weights(tmp_path / "killed" / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_a = (tmp_path / "straight" / "train_log.jsonl").read_text()
    log_b = (tmp_path / "killed" / "train_log.jsonl").read_text()
    assert log_a == log_b
    assert not (tmp_path / "killed" / "state").exists()


def test_resume_at_another_global_batch_is_refused_and_the_same_one_continues(
    tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint made at global batch 2 (1 x 2 accumulation) is not continued at global batch 1; the same
    global batch written another way (solver.global_batch_size=2) continues it."""
    from evarl.engine import ResumeError

    args = (str(tiny_model_dir), make_pairs(), ref_rows)
    monkeypatch.setenv(FAIL_ENV, "2")
    with pytest.raises(SimulatedKill):
        train_preference(*args, small_cfg(batch_size=1, grad_accum=2, save_every=1), tmp_path, seed=3,
                         progress=False)  # fmt: skip
    monkeypatch.delenv(FAIL_ENV)
    with pytest.raises(ResumeError, match="global batch of 2 .* would resume at 1"):
        train_preference(*args, small_cfg(batch_size=1, grad_accum=1, save_every=1), tmp_path, seed=3,
                         progress=False)  # fmt: skip
    assert (tmp_path / "state" / "latest").exists()  # nothing lost
    done = train_preference(*args, small_cfg(batch_size=1, global_batch_size=2, save_every=1), tmp_path, seed=3,
                            progress=False)  # fmt: skip
    assert done["resumed_from_step"] == 2 and done["global_batch"] == 2


def test_different_seed_gives_different_weights(
    tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path
) -> None:
    cfg = small_cfg(batch_size=1, grad_accum=1)
    train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path / "a", seed=0, progress=False)
    train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path / "b", seed=1, progress=False)
    a, b = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_finished_output_is_not_retrained(tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path) -> None:
    cfg = small_cfg()
    first = train_preference(
        str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, seed=0, progress=False
    )
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "model").iterdir()}
    again = train_preference(str(tiny_model_dir), make_pairs(), None, cfg, tmp_path, seed=0, progress=False)
    assert again == first
    assert stamp == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "model").iterdir()}


def test_stale_state_from_other_inputs_is_discarded(
    tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_cfg(save_every=1, batch_size=1)
    monkeypatch.setenv(FAIL_ENV, "2")
    with pytest.raises(SimulatedKill):
        train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, seed=0, progress=False)
    monkeypatch.delenv(FAIL_ENV)
    other = dataclasses.replace(cfg, beta=0.2)
    s = train_preference(str(tiny_model_dir), make_pairs(), ref_rows, other, tmp_path, seed=0, progress=False)
    assert s["resumed_from_step"] == 0


# ---------------------------------------------------------------- errors


def test_errors_are_clear(tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path) -> None:
    pairs = make_pairs()
    with pytest.raises(ValueError, match="needs reference log-probs"):
        train_preference(str(tiny_model_dir), pairs, None, small_cfg(), tmp_path / "a", 0, progress=False)
    with pytest.raises(ValueError, match="7 rows for 8 pairs"):
        train_preference(
            str(tiny_model_dir), pairs, ref_rows[:7], small_cfg(), tmp_path / "b", 0, progress=False
        )
    swapped = [dict(r) for r in ref_rows]
    for r in swapped:
        r.pop("pair_index")
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ValueError, match="row 0: prompt_id 'p1'"):
        train_preference(str(tiny_model_dir), pairs, swapped, small_cfg(), tmp_path / "c", 0, progress=False)
    with pytest.raises(ValueError, match="no training examples"):
        train_preference(str(tiny_model_dir), [], [], small_cfg(), tmp_path / "d", 0, progress=False)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_tracker_is_a_clear_error(tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path) -> None:
    cfg = small_cfg(log_to=["jsonl", "wandb"])
    with pytest.raises(ModuleNotFoundError, match=r"solver.log_to\[1\]: 'wandb' is listed"):
        train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, 0, progress=False)
    assert not (tmp_path / "train_log.jsonl").exists()  # refused before any compute


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logging(tiny_model_dir: Path, ref_rows: list[dict], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_cfg(log_to=["jsonl", "tensorboard"])
    train_preference(str(tiny_model_dir), make_pairs(), ref_rows, cfg, tmp_path, 0, progress=False)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "train/reward_margin", "train/lr"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_smollm2_dpo_two_steps(smollm2_dir: Path, tmp_path: Path) -> None:
    """The real embedded model end to end: reference pass, 2 DPO steps, a loadable saved model."""
    pairs = make_pairs()[:4]
    cfg = small_cfg(learning_rate=1e-5, batch_size=2, max_length=48, max_prompt_length=40)
    tok = load_tokenizer(str(smollm2_dir))
    ref = compute_reference_logps(load_causal_lm(str(smollm2_dir)), tok, pairs, cfg, 4)
    summary = train_preference(str(smollm2_dir), pairs, ref, cfg, tmp_path, seed=0, progress=False)
    assert summary["steps"] == 2
    model = load_causal_lm(str(tmp_path / "model"))
    after = compute_reference_logps(model, load_tokenizer(str(tmp_path / "model")), pairs, cfg, 4)
    m = sum(
        (a["chosen_logp"] - r["chosen_logp"]) - (a["rejected_logp"] - r["rejected_logp"])
        for a, r in zip(after, ref)
    )
    assert m > 0
