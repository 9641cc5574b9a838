"""Preference losses: hand-computed values for every loss, and parity with TRL's implementations.

TRL keeps its DPO-family losses inline in `DPOTrainer._compute_loss`; the parity tests call that method on a
stub trainer whose "model" returns per-token log-probs chosen so that their sums are the test's sequence
log-probs. SimPO and ORPO come from `trl.experimental` (`CPOTrainer.cpo_loss`, `ORPOTrainer.odds_ratio_loss`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from evarl.config import SolverConfig
from evarl.registry import LOSSES
from evarl.solver.losses import LossInputs, LossParams, get_loss, needs_reference


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# one batch used throughout: 3 pairs
PC, PR = t(-10.0, -20.0, -5.0), t(-12.0, -18.0, -9.0)
RC, RR = t(-11.0, -19.0, -6.0), t(-11.0, -19.0, -8.0)
LC, LR = torch.tensor([5, 10, 2]), torch.tensor([4, 6, 3])


def batch(**kw) -> LossInputs:
    base = dict(
        policy_chosen_logps=PC.clone(),
        policy_rejected_logps=PR.clone(),
        chosen_lengths=LC,
        rejected_lengths=LR,
        ref_chosen_logps=RC.clone(),
        ref_rejected_logps=RR.clone(),
    )
    base.update(kw)
    return LossInputs(**base)


# log-ratios: chosen (1, -1, 1), rejected (-1, 1, -1); h = (2, -2, 2)
H = [2.0, -2.0, 2.0]
LRC, LRR = [1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]


def test_registered_names_and_reference_flags() -> None:
    for name in ("dpo", "dpo-robust", "ipo", "hinge", "sppo", "sppo-hard", "simpo", "orpo", "dpo-nll"):
        assert name in LOSSES
    assert not needs_reference("simpo") and not needs_reference("orpo")
    assert all(needs_reference(n) for n in ("dpo", "ipo", "hinge", "sppo", "sppo-hard", "dpo-nll"))


def test_dpo_hand_computed() -> None:
    beta = 0.1
    loss, m = get_loss("dpo")(batch(), LossParams(beta=beta))
    expected = sum(-math.log(sig(beta * h)) for h in H) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["reward_margin"].item() == pytest.approx(beta * sum(H) / 3)
    assert m["reward_accuracy"].item() == pytest.approx(2 / 3)
    assert m["chosen_reward"].item() == pytest.approx(beta * sum(LRC) / 3)
    assert m["rejected_reward"].item() == pytest.approx(beta * sum(LRR) / 3)


def test_dpo_label_smoothing_is_conservative_dpo() -> None:
    beta, eps = 0.5, 0.2
    loss, _ = get_loss("dpo")(batch(), LossParams(beta=beta, label_smoothing=eps))
    expected = sum(-(1 - eps) * math.log(sig(beta * h)) - eps * math.log(sig(-beta * h)) for h in H) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_robust_dpo_hand_computed_and_range() -> None:
    beta, eps = 0.5, 0.2
    loss, _ = get_loss("dpo-robust")(batch(), LossParams(beta=beta, label_smoothing=eps))
    expected = (
        sum(
            (-(1 - eps) * math.log(sig(beta * h)) + eps * math.log(sig(-beta * h))) / (1 - 2 * eps) for h in H
        )
        / 3
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="label_smoothing"):
        get_loss("dpo-robust")(batch(), LossParams(label_smoothing=0.5))


def test_ipo_hand_computed_length_normalised() -> None:
    beta = 0.25
    loss, _ = get_loss("ipo")(batch(), LossParams(beta=beta))
    lc, lr = [5, 10, 2], [4, 6, 3]
    hs = [LRC[i] / lc[i] - LRR[i] / lr[i] for i in range(3)]  # (0.45, -0.2667, 0.8333)
    expected = sum((h - 1 / (2 * beta)) ** 2 for h in hs) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_hinge_hand_computed() -> None:
    beta = 0.3
    loss, _ = get_loss("hinge")(batch(), LossParams(beta=beta))
    expected = sum(max(0.0, 1 - beta * h) for h in H) / 3  # (0.4, 1.6, 0.4)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.8)


def test_sppo_soft_hand_computed() -> None:
    beta = 0.5  # eta = 2
    pw, pl = t(0.8, 0.6, 0.9), t(0.3, 0.5, 0.1)
    loss, _ = get_loss("sppo")(batch(chosen_win_prob=pw, rejected_win_prob=pl), LossParams(beta=beta))
    eta = 1 / beta
    expected = (
        sum(
            (LRC[i] - eta * (pw[i].item() - 0.5)) ** 2 + (LRR[i] - eta * (pl[i].item() - 0.5)) ** 2
            for i in range(3)
        )
        / 3
    )
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_sppo_without_probabilities_is_sppo_hard() -> None:
    p = LossParams(beta=0.5)
    soft, _ = get_loss("sppo")(batch(), p)
    hard, _ = get_loss("sppo-hard")(batch(), p)
    # targets +-1/(2 beta) = +-1: chosen (0, 4, 0), rejected (0, 4, 0)
    assert hard.item() == pytest.approx((0 + 8 + 0) / 3)
    assert soft.item() == pytest.approx(hard.item(), rel=1e-12)


def test_simpo_hand_computed_reference_free() -> None:
    beta, gamma = 2.0, 0.5
    inp = batch(ref_chosen_logps=None, ref_rejected_logps=None)
    loss, m = get_loss("simpo")(inp, LossParams(beta=beta, gamma=gamma))
    ac, ar = [-10 / 5, -20 / 10, -5 / 2], [-12 / 4, -18 / 6, -9 / 3]
    expected = sum(-math.log(sig(beta * ac[i] - beta * ar[i] - gamma)) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert m["chosen_reward"].item() == pytest.approx(beta * sum(ac) / 3)


def test_orpo_hand_computed_reference_free() -> None:
    lam = 0.5
    inp = batch(ref_chosen_logps=None, ref_rejected_logps=None)
    loss, m = get_loss("orpo")(inp, LossParams(lam=lam))
    ac, ar = [-2.0, -2.0, -2.5], [-3.0, -3.0, -3.0]

    def log_odds(a: float) -> float:
        return a - math.log(1 - math.exp(a))

    expected = sum(-ac[i] - lam * math.log(sig(log_odds(ac[i]) - log_odds(ar[i]))) for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert m["nll"].item() == pytest.approx(-sum(ac) / 3)


def test_dpo_nll_hand_computed() -> None:
    beta, alpha = 0.1, 0.7
    loss, m = get_loss("dpo-nll")(batch(), LossParams(beta=beta, nll_weight=alpha))
    dpo = sum(-math.log(sig(beta * h)) for h in H) / 3
    nll = (10 / 5 + 20 / 10 + 5 / 2) / 3
    assert loss.item() == pytest.approx(dpo + alpha * nll, rel=1e-12)
    assert m["nll"].item() == pytest.approx(nll)


def test_reference_losses_refuse_missing_reference() -> None:
    inp = batch(ref_chosen_logps=None, ref_rejected_logps=None)
    for name in ("dpo", "ipo", "hinge", "sppo", "sppo-hard", "dpo-nll"):
        with pytest.raises(ValueError, match="reference"):
            get_loss(name)(inp, LossParams())


def test_solver_config_is_accepted_as_params() -> None:
    cfg = SolverConfig(beta=0.1)
    a, _ = get_loss("dpo")(batch(), cfg)
    b, _ = get_loss("dpo")(batch(), LossParams(beta=0.1))
    assert a.item() == b.item()


def test_gradients_push_chosen_up_and_rejected_down() -> None:
    for name in ("dpo", "ipo", "hinge", "sppo-hard", "simpo", "orpo", "dpo-nll"):
        pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
        loss, _ = get_loss(name)(
            batch(policy_chosen_logps=pc, policy_rejected_logps=pr), LossParams(beta=0.1, gamma=0.1, lam=0.5)
        )
        loss.backward()
        assert (pc.grad <= 0).all() and (pc.grad < 0).any(), name
        assert (pr.grad >= 0).all() and (pr.grad > 0).any(), name


# ---------------------------------------------------------------- TRL parity


def _trl_dpo(loss_types: list[str], weights: list[float], beta: float, eps: float, inp: LossInputs) -> float:
    from trl.trainer.dpo_trainer import DPOTrainer

    b = inp.policy_chosen_logps.shape[0]
    lengths = torch.cat([inp.chosen_lengths, inp.rejected_lengths])
    logps = torch.cat([inp.policy_chosen_logps, inp.policy_rejected_logps]).float()
    seq = int(lengths.max()) + 1
    completion = torch.zeros(2 * b, seq, dtype=torch.long)
    per_token = torch.zeros(2 * b, seq - 1)
    for i, n in enumerate(lengths.tolist()):
        completion[i, 1 : 1 + n] = 1
        per_token[i, :n] = logps[i] / n  # sums to the sequence log-prob over the completion positions
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros_like(per_token),
        mean_logits=torch.zeros_like(per_token),
        is_top1=torch.zeros_like(per_token, dtype=torch.bool),
        aux_loss=None,
    )
    ident = lambda x: x  # noqa: E731
    stub = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=ident, gather=ident),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=weights,
        beta=beta,
        label_smoothing=eps,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * b, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, seq, dtype=torch.long),
        "completion_mask": completion,
        "ref_chosen_logps": inp.ref_chosen_logps.float(),
        "ref_rejected_logps": inp.ref_rejected_logps.float(),
    }
    return DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False).item()


@pytest.mark.parametrize(
    ("ours", "trl", "beta", "eps"),
    [
        ("dpo", "sigmoid", 0.1, 0.0),
        ("dpo-robust", "robust", 0.5, 0.2),
        ("ipo", "ipo", 0.25, 0.0),
        ("hinge", "hinge", 0.3, 0.0),
        ("sppo-hard", "sppo_hard", 0.5, 0.0),
        ("sppo", "sppo_hard", 0.5, 0.0),
    ],
)
def test_parity_with_trl_dpo_trainer(ours: str, trl: str, beta: float, eps: float) -> None:
    inp = batch()
    mine, _ = get_loss(ours)(inp, LossParams(beta=beta, label_smoothing=eps))
    assert mine.item() == pytest.approx(_trl_dpo([trl], [1.0], beta, eps, inp), rel=1e-5)


def test_parity_dpo_nll_with_trl_sigmoid_plus_sft() -> None:
    # TRL's "sft" term is a token mean over the batch, ours a per-sequence mean: equal for equal lengths.
    same = torch.tensor([4, 4, 4])
    inp = batch(chosen_lengths=same, rejected_lengths=same)
    mine, _ = get_loss("dpo-nll")(inp, LossParams(beta=0.1, nll_weight=0.7))
    assert mine.item() == pytest.approx(_trl_dpo(["sigmoid", "sft"], [1.0, 0.7], 0.1, 0.0, inp), rel=1e-5)


def test_parity_simpo_with_trl_cpo_trainer() -> None:
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    beta, gamma, eps = 2.0, 0.5, 0.1
    stub = SimpleNamespace(
        alpha=0.0,
        simpo_gamma=gamma,
        beta=beta,
        loss_type="simpo",
        label_smoothing=eps,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    inp = batch(ref_chosen_logps=None, ref_rejected_logps=None)
    # CPOTrainer feeds SimPO average log-probs
    losses, _, _ = CPOTrainer.cpo_loss(stub, (PC / LC).float(), (PR / LR).float())
    mine, _ = get_loss("simpo")(inp, LossParams(beta=beta, gamma=gamma, label_smoothing=eps))
    assert mine.item() == pytest.approx(losses.mean().item(), rel=1e-5)


def test_parity_orpo_with_trl_orpo_trainer() -> None:
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    lam = 0.5
    same = torch.tensor([4, 4, 4])
    inp = batch(ref_chosen_logps=None, ref_rejected_logps=None, chosen_lengths=same, rejected_lengths=same)
    stub = SimpleNamespace(beta=lam, accelerator=SimpleNamespace(device=torch.device("cpu")))
    avg_c, avg_r = (PC / 4).float(), (PR / 4).float()
    losses, *_ = ORPOTrainer.odds_ratio_loss(stub, avg_c, avg_r)
    trl_total = (-avg_c).mean() - losses.mean()  # ORPOTrainer: loss = policy_nll_loss - losses.mean()
    mine, _ = get_loss("orpo")(inp, LossParams(lam=lam))
    assert mine.item() == pytest.approx(trl_total.item(), rel=1e-5)
