import random

import pytest
import torch

from evarl.creator.buffer import GenerativeBuffer, phase
from evarl.solver.rloo import rloo_advantages, rloo_loss
from evarl.types import Prompt


def _p(i: int) -> Prompt:
    return Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}])


def test_rloo_advantages_hand_computed() -> None:
    r = torch.tensor([1.0, 0.0, 0.5, 2.0, 4.0, 7.0])
    g = torch.tensor([0, 0, 0, 1, 1, 2])
    adv = rloo_advantages(r, g)
    # group 0: 1 - (0+0.5)/2 = 0.75; 0 - 0.75 = -0.75; 0.5 - 0.5 = 0 ; group 1: 2-4=-2, 4-2=2 ; singleton: 0
    assert torch.allclose(adv, torch.tensor([0.75, -0.75, 0.0, -2.0, 2.0, 0.0]))


def test_rloo_loss_gradient_and_kl_shaping() -> None:
    logps = torch.tensor([-3.0, -4.0], requires_grad=True)
    loss, m = rloo_loss(logps, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    loss.backward()
    # adv = [1, -1]; loss = -(1*-3 + -1*-4)/2 = -0.5; d/dlogp = -adv/2
    assert float(loss) == pytest.approx(-0.5)
    assert torch.allclose(logps.grad, torch.tensor([-0.5, 0.5]))
    # KL shaping: r - 0.5*(logp - ref); ref = logp - [2, 0] -> shaped [0, 0] -> no signal
    logps2 = torch.tensor([-3.0, -4.0], requires_grad=True)
    loss2, m2 = rloo_loss(
        logps2, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([-5.0, -4.0]), 0.5
    )
    assert float(loss2) == pytest.approx(0.0)
    assert float(m2["kl"]) == pytest.approx(1.0)


def test_buffer_evicts_oldest_pops_trained_and_samples_by_priority() -> None:
    b = GenerativeBuffer(3)
    assert phase(b, 5) == "warmup"
    assert b.add([_p(0), _p(1)], [0.1, 0.2], step=1) == 0
    assert b.add([_p(2), _p(3)], [0.3, 0.4], step=2) == 1  # p0 evicted
    assert [it.prompt.id for it in b.items] == ["p1", "p2", "p3"] and b.full
    assert phase(b, 5) == "mixup" and phase(b, 0) == "bootstrap"
    assert b.add([_p(3)], [9.0], step=3) == 0 and len(b) == 3  # duplicate id skipped
    assert b.pop({"p2"}) == 1 and [it.prompt.id for it in b.items] == ["p1", "p3"]
    # priority-weighted: with weights 1 vs 1000 the heavy item is almost always drawn first
    b2 = GenerativeBuffer(10)
    b2.add([_p(0), _p(1)], [0.0, 1000.0], step=1)
    picks = [b2.sample(1, random.Random(s))[0].id for s in range(200)]
    assert picks.count("p1") > 180
    assert {p.id for p in b2.sample(5, random.Random(0))} == {"p0", "p1"}
    rows = b2.to_rows()
    assert GenerativeBuffer.from_rows(10, rows).to_rows() == rows


def test_buffer_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError, match="online.buffer_size"):
        GenerativeBuffer(0)
