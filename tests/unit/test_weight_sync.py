"""Sampler/trainer weight sync (evarl.generation.sync): the log-prob gap by hand, the warning, the trainer's
per-token log-probs against the solver's summed ones on the tiny Llama, and a whole online sync round —
VLLMGenerator.sync_weights into a stand-in vLLM engine whose worker model is a real copy of the tiny Llama —
where a missed sync is caught and a real one is not."""

from __future__ import annotations

import copy
import math
import sys
import types

import pytest
import torch

from evarl.generation.sync import check_after_sync, check_sync, logp_gap, trainer_token_logps


def test_logp_gap_hand_computed() -> None:
    # |(-1.0) - (-1.2)| + |(-0.5) - (-0.5)| + |(-2.0) - (-1.0)| = 0.2 + 0 + 1.0 over 3 tokens
    assert logp_gap([[-1.0, -0.5], [-2.0]], [[-1.2, -0.5], [-1.0]]) == pytest.approx(1.2 / 3)
    # pooled over tokens, not averaged over sequences: (4 x 0.1 + 1 x 1.0) / 5 = 0.28 (per-sequence mean: 0.55)
    assert logp_gap([[0.0] * 4, [0.0]], [[0.1] * 4, [-1.0]]) == pytest.approx(0.28)
    assert logp_gap([[-3.0]], [[-3.0]]) == 0.0
    assert math.isnan(logp_gap([], [])) and math.isnan(logp_gap([[]], [[]]))
    with pytest.raises(ValueError, match="sequence 0"):
        logp_gap([[-1.0, -2.0]], [[-1.0]])
    with pytest.raises(ValueError, match="2 sampler sequences"):
        logp_gap([[-1.0], [-1.0]], [[-1.0]])


def test_check_sync_warns_only_above_the_threshold() -> None:
    assert check_sync(0.05, 0.1) is None
    assert check_sync(0.1, 0.1) is None
    assert check_sync(math.nan, 0.1) is None
    msg = check_sync(0.4321, 0.1)
    assert msg is not None and "0.4321" in msg and "generation.logp_gap_warn" in msg and "stale" in msg


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from evarl.models.loading import load_causal_lm, load_tokenizer

    return load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def _ids(tok):
    from evarl.solver.logprobs import encode_prompt, encode_response

    convs = [
        [{"role": "user", "content": "Name a colour."}],
        [{"role": "user", "content": "Say hi in French."}],
    ]
    prompts = [encode_prompt(tok, c, 64) for c in convs]
    responses = [encode_response(tok, "Blue, like the sky.", 32), encode_response(tok, "Bonjour", 32)]
    return prompts, responses


def test_trainer_token_logps_sum_to_the_solver_logps(tiny) -> None:
    from evarl.solver.logprobs import collate_sequences, response_logps

    model, tok = tiny
    prompts, responses = _ids(tok)
    per_token = trainer_token_logps(model, tok, prompts, responses)
    assert [len(x) for x in per_token] == [len(r) for r in responses]
    b = collate_sequences(prompts, responses, tok.pad_token_id)
    with torch.no_grad():
        sums, lengths = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
    assert [sum(x) for x in per_token] == pytest.approx(sums.tolist(), abs=1e-4)
    assert lengths.tolist() == [len(r) for r in responses]
    assert all(v <= 0 for row in per_token for v in row)
    assert trainer_token_logps(model, tok, [], []) == []


def test_trainer_token_logps_restores_train_mode(tiny) -> None:
    model, tok = tiny
    prompts, responses = _ids(tok)
    model.train()
    trainer_token_logps(model, tok, prompts[:1], responses[:1])
    assert model.training
    model.eval()


class _HFWorkerModel:
    """Inside the stand-in engine: a real copy of the policy with vLLM's `load_weights(weights)` contract
    (Hugging Face names)."""

    def __init__(self, model) -> None:
        self.model = model

    def load_weights(self, weights):
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, t in weights:
                params[name].copy_(t)
        return {n for n, _ in weights}


def _engine_module(worker_model: _HFWorkerModel, tok) -> types.ModuleType:
    mod = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, model: str, **kw):
            self.kwargs = kw
            self.prefix_resets = 0

        def apply_model(self, func):
            return [func(worker_model)]

        def reset_prefix_cache(self):
            self.prefix_resets += 1

        def generate(self, prompts, sp, use_tqdm=True):
            # prompt_logprobs computed by the engine's own copy of the weights
            outs = []
            for p in prompts:
                ids = p["prompt_token_ids"]
                lps = trainer_token_logps(worker_model.model, tok, [ids[:1]], [ids[1:]])[0]
                plp = [None] + [{t: types.SimpleNamespace(logprob=v)} for t, v in zip(ids[1:], lps)]
                outs.append(types.SimpleNamespace(prompt_logprobs=plp, outputs=[]))
            return outs

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


def test_online_sync_round_catches_stale_weights(tiny, tiny_model_dir, monkeypatch) -> None:
    from evarl.generation.vllm_backend import VLLMGenerator

    model, tok = tiny
    trainer = copy.deepcopy(model)
    sampler_copy = _HFWorkerModel(copy.deepcopy(model))
    monkeypatch.setitem(sys.modules, "vllm", _engine_module(sampler_copy, tok))
    gen = VLLMGenerator(str(tiny_model_dir), tokenizer=tok)
    prompts, responses = _ids(tok)

    gap0, warn0 = check_after_sync(gen, trainer, tok, prompts, responses, 0.1)
    assert gap0 < 1e-4 and warn0 is None  # same weights

    # one large optimizer step on the trainer: the engine still holds the old weights
    opt = torch.optim.SGD(trainer.parameters(), lr=5.0)
    b = trainer_token_logps(trainer, tok, prompts, responses)
    assert b
    trainer.train()
    from evarl.solver.logprobs import collate_sequences, response_logps

    batch = collate_sequences(prompts, responses, tok.pad_token_id)
    sums, _ = response_logps(trainer, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    (-sums.sum()).backward()
    opt.step()
    trainer.eval()

    stale, warn = check_after_sync(gen, trainer, tok, prompts, responses, 0.1)
    assert stale > 0.1 and warn is not None and "stale" in warn

    n = gen.sync_weights(trainer.named_parameters())
    assert n == len(list(trainer.named_parameters()))
    assert gen.llm.prefix_resets == 1
    gap, warn = check_after_sync(gen, trainer, tok, prompts, responses, 0.1)
    assert gap < 1e-4 and warn is None


def test_check_after_sync_uses_at_most_max_sequences() -> None:
    seen = {}

    class Sampler:
        def token_logps(self, p, r):
            seen["n"] = len(p)
            return [[-1.0] * len(x) for x in r]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None, use_cache=False):
            # uniform over 4 tokens: every log-prob is log(1/4)
            return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape, 4) + self.w)

    tok = types.SimpleNamespace(pad_token_id=0, eos_token_id=0)
    gap, warn = check_after_sync(
        Sampler(), Model(), tok, [[1, 2]] * 6, [[3], [1, 2], [], [3], [3], [3]], 0.1, 3
    )
    assert seen["n"] == 3  # the empty response is skipped, then the first three
    assert gap == pytest.approx(abs(-1.0 - math.log(0.25)))
    assert warn is not None
    assert check_after_sync(Sampler(), Model(), tok, [[1]], [[]], 0.1) == (
        pytest.approx(math.nan, nan_ok=True),
        None,
    )
