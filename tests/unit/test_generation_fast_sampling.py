"""The new `hf` decode loop's pure parts: nucleus sampling against HF's TopPLogitsWarper and softmax(logits/T),
per-sequence seeds, and the loop's bookkeeping (stop tokens, finished rows leaving, greedy) on a scripted model."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from evarl.generation.fast import decode, sample_next, sequence_seed, sequence_uniforms


def _hf_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution transformers' generate(do_sample=True, temperature, top_p, top_k=0) samples from."""
    x = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1.0:
        x = TopPLogitsWarper(top_p)(None, x)
    return x.softmax(-1)


def _grid(k: int) -> torch.Tensor:
    return (torch.arange(k, dtype=torch.float64) + 0.5) / k


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.8, 0.95), (0.7, 0.5), (2.0, 0.9), (0.3, 0.99)])
def test_inverse_cdf_on_a_grid_gives_exactly_the_hf_distribution(temperature: float, top_p: float) -> None:
    """Uniforms on a regular grid of K points give each token a count within 1 of K * p(token)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 300, generator=g) * 3
    k = 20_000
    toks = sample_next(logits.expand(k, -1).contiguous(), _grid(k), temperature, top_p)
    counts = torch.bincount(toks, minlength=300).double()
    expected = _hf_probs(logits, temperature, top_p)[0].double() * k
    assert (counts - expected).abs().max() <= 1.0 + 1e-6
    assert set(toks.unique().tolist()) <= set((expected > 0).nonzero().squeeze(-1).tolist())


def test_nucleus_wider_than_the_first_candidates_falls_back_to_the_full_vocabulary() -> None:
    """Nearly flat logits: the 0.95 nucleus holds far more than the first top-k candidates."""
    logits = torch.linspace(0.0, 1.0, 5000).repeat(2, 1)
    logits[1] = 0.0
    logits[1, :10] = 20.0  # the second row's nucleus is small: both paths in one call
    k = 20_000
    toks = sample_next(logits.repeat_interleave(k, 0), _grid(k).repeat(2), 1.0, 0.95)
    flat, peaked = toks[:k], toks[k:]
    expected = _hf_probs(logits, 1.0, 0.95)
    kept = (expected[0] > 0).sum().item()
    assert 4000 < kept < 5000
    counts = torch.bincount(flat, minlength=5000).double()
    assert (counts - expected[0].double() * k).abs().max() <= 1.0 + 1e-6
    assert torch.equal(counts > 0, expected[0] > 0)
    assert set(peaked.unique().tolist()) == set((expected[1] > 0).nonzero().squeeze(-1).tolist())


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # HF keeps a token while the mass of the more likely ones is < p (exact ties with p are rounding-dependent)
    for top_p, allowed in [
        (0.45, {0}),
        (0.55, {0, 1}),
        (0.78, {0, 1}),
        (0.82, {0, 1, 2}),
        (0.97, {0, 1, 2, 3}),
    ]:
        toks = sample_next(logits.expand(1000, -1), _grid(1000), 1.0, top_p)
        hf = set((_hf_probs(logits, 1.0, top_p)[0] > 0).nonzero().squeeze(-1).tolist())
        assert set(toks.tolist()) == allowed == hf, top_p


def test_random_uniforms_pass_a_chi_square_test() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 50, generator=g) * 2
    n = 40_000
    toks = sample_next(logits.expand(n, -1), torch.rand(n, generator=g, dtype=torch.float64), 0.8, 0.9)
    p = _hf_probs(logits, 0.8, 0.9)[0].double()
    support = p > 0
    counts = torch.bincount(toks, minlength=50).double()
    assert counts[~support].sum() == 0
    chi2 = (((counts - n * p) ** 2) / (n * p))[support].sum().item()
    dof = int(support.sum()) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5  # ~5 sigma


def test_greedy_is_argmax() -> None:
    logits = torch.randn(7, 100)
    assert torch.equal(sample_next(logits, torch.rand(7, dtype=torch.float64), 0.0, 0.9), logits.argmax(-1))


def test_sequence_seeds_are_distinct_and_stable() -> None:
    seeds = {sequence_seed(s, i, j) for s in range(3) for i in range(20) for j in range(8)}
    assert len(seeds) == 3 * 20 * 8 and all(0 <= x < 2**63 for x in seeds)
    assert sequence_seed(5, 2, 1) == sequence_seed(5, 2, 1)
    assert torch.equal(sequence_uniforms(5, 2, 1, 10), sequence_uniforms(5, 2, 1, 10))
    assert sequence_uniforms(5, 2, 1, 10)[:4].tolist() == sequence_uniforms(5, 2, 1, 4).tolist()


class _Counting(torch.nn.Module):
    """A stand-in LM: after token t it predicts t + 1 (and ``stop`` after ``stop - 1``), whatever the batch.
    It checks the loop's bookkeeping: rows leaving the batch, positions, stop handling."""

    config = None

    def __init__(self, vocab: int = 50, sharp: float = 40.0) -> None:
        super().__init__()
        self.vocab, self.sharp = vocab, sharp
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, int]] = []

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, **kw: Any
    ):
        assert attention_mask.shape[0] == input_ids.shape[0] == position_ids.shape[0]
        self.calls.append(tuple(input_ids.shape))
        last = input_ids[:, -1:]
        # positions count real tokens: the last position of a row is its (unpadded) length - 1 + steps
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -self.sharp)
        logits.scatter_(2, ((last + 1) % self.vocab).unsqueeze(-1), self.sharp)
        return SimpleNamespace(logits=logits)


def test_rows_stop_and_leave_the_batch() -> None:
    model = _Counting()
    stop = 49
    prompts = [[1, 2, 45], [7], [3, 30], [46]]
    out = decode(model, prompts, 3, 1.0, 1.0, 10, 0, [stop], 0, batch_rows=64)
    assert out[0] == [([46, 47, 48], True)] * 3
    assert out[1] == [(list(range(8, 18)), False)] * 3  # never reaches the stop: cut at max_new_tokens
    assert out[2] == [(list(range(31, 41)), False)] * 3
    assert out[3] == [([47, 48], True)] * 3
    widths = [b for b, _ in model.calls]
    assert widths[0] == 4  # one prefill for the 4 prompts, not 12 rows
    assert widths[1] == 12 and min(widths[1:]) == 6  # the rows of prompts 0 and 3 left the batch
    assert len(model.calls) == 10  # prefill + 9 decode steps (the 10th token needs no forward)


def test_stop_at_once_greedy_and_empty_cases() -> None:
    model = _Counting()
    out = decode(model, [[48], [10]], 2, 0.0, 0.9, 5, 0, [49], 0)
    assert out[0] == [([], True)] * 2  # the first token is the stop token
    assert out[1] == [([11, 12, 13, 14, 15], False)] * 2
    assert decode(model, [], 2, 1.0, 1.0, 5, 0, [49], 0) == []
    assert decode(model, [[1]], 2, 1.0, 1.0, 0, 0, [49], 0) == [[([], False)] * 2]


def test_packing_does_not_change_any_sample() -> None:
    """A soft stand-in (ties between several next tokens): the samples of each prompt position are the same
    whatever the batch size or the other prompts of the call."""
    model = _Counting(sharp=0.5)
    prompts = [[1, 2, 3], [5], [9, 9], [20, 21, 22, 23]]
    a = decode(model, prompts, 3, 1.0, 0.9, 12, 7, [49], 0, batch_rows=64)
    b = decode(model, prompts, 3, 1.0, 0.9, 12, 7, [49], 0, batch_rows=1)
    c = decode(model, prompts + [[2], [40, 41]], 3, 1.0, 0.9, 12, 7, [49], 0, batch_rows=6)
    assert a == b == c[:4]
    assert len({tuple(ids) for row in a for ids, _ in row}) > 6  # the samples do differ
    assert a != decode(model, prompts, 3, 1.0, 0.9, 12, 8, [49], 0)  # another seed, other samples
