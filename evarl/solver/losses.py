"""Preference-optimisation losses over sequence log-probabilities (the solver step, seed 001 §3.3.1).

Every loss is a pure function ``fn(inp: LossInputs, params) -> (loss, metrics)``:

* ``inp`` carries per-pair *summed* response log-probs under the policy (and, for losses that need one, the
  reference), response lengths in tokens and, for SPPO, the win probabilities of the two responses;
* ``params`` is anything with the attributes ``beta, gamma, lam, nll_weight, label_smoothing``
  (a :class:`evarl.config.SolverConfig` or a :class:`LossParams`);
* ``loss`` is a scalar (mean over pairs) and ``metrics`` holds detached scalars ``reward_margin``,
  ``reward_accuracy``, ``chosen_reward``, ``rejected_reward`` (each loss's *implicit* reward, as TRL logs them)
  plus ``chosen_logp`` / ``rejected_logp`` (mean summed policy log-probs).

Each function carries ``needs_reference`` (the trainer skips reference log-probs when False: SimPO, ORPO)
and is registered in :data:`evarl.registry.LOSSES` under the name a config uses (``solver.loss``).

Implemented (with the paper each comes from):

=============  ===========================================================================================
``dpo``        DPO, Rafailov et al. 2023; ``label_smoothing`` eps > 0 gives conservative DPO (cDPO, Mitchell 2023)
``dpo-robust`` robust DPO, Chowdhury et al. 2024 (unbiased under label-flip rate eps = ``label_smoothing``)
``ipo``        IPO, Azar et al. 2023, Eq. 17, on *length-normalised* log-ratios (as TRL, confirmed by the authors)
``hinge``      SLiC-HF hinge, Zhao et al. 2023
``sppo``       SPPO, Wu et al. 2024, Eq. 4.7, soft win probabilities P(y > pi_t) from a preference model
``sppo-hard``  SPPO with hard probabilities (1 for y+, 0 for y-), = TRL ``sppo_hard``
``simpo``      SimPO, Meng et al. 2024 (length-normalised, reference-free, target margin gamma)
``orpo``       ORPO, Hong et al. 2024 (odds ratio on length-normalised log-probs + NLL; reference-free)
``dpo-nll``    DPO + length-normalised NLL on y+ (RPO, Pang et al. 2024; seed 001 Tables 13-15)
=============  ===========================================================================================

Deviation from the eva / SPPO reference code: their ``sppo`` averages the two squared terms (``/2``); here the
paper's Eq. 4.7 is used as written (a sum), which makes ``sppo`` with hard probabilities identical to
``sppo-hard`` and to TRL's ``sppo_hard``. The factor only rescales the learning rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from evarl.registry import LOSSES

Tensor = torch.Tensor


@dataclass
class LossInputs:
    """Per-pair inputs, all shape ``[B]``. Log-probs are *sums* over response tokens (prompt excluded)."""

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    chosen_lengths: Tensor  # response tokens of y+ (>= 1)
    rejected_lengths: Tensor
    ref_chosen_logps: Tensor | None = None
    ref_rejected_logps: Tensor | None = None
    # SPPO: P(y > pi_t), the probability that the response beats the policy's own samples (mean of
    # P(y > y_j) over the other sampled responses). None = hard probabilities 1 (y+) and 0 (y-).
    chosen_win_prob: Tensor | None = None
    rejected_win_prob: Tensor | None = None


class LossHyperparams(Protocol):
    beta: float
    gamma: float
    lam: float
    nll_weight: float
    label_smoothing: float


@dataclass
class LossParams:
    """Standalone hyper-parameters (the same fields as :class:`evarl.config.SolverConfig`)."""

    beta: float = 0.1
    gamma: float = 0.5
    lam: float = 0.1
    nll_weight: float = 1.0
    label_smoothing: float = 0.0


LossFn = Callable[[LossInputs, LossHyperparams], tuple[Tensor, dict[str, Tensor]]]


def preference_loss(name: str, needs_reference: bool = True) -> Callable[[Any], Any]:
    """Register a loss in LOSSES and tag it with ``needs_reference``."""

    def deco(fn: Any) -> Any:
        fn.needs_reference = needs_reference
        LOSSES.register(name)(fn)
        return fn

    return deco


def get_loss(name: str) -> LossFn:
    """The registered loss ``name`` (KeyError lists the known ones)."""
    return LOSSES.get(name)


def needs_reference(name: str) -> bool:
    """Whether loss ``name`` reads reference log-probs (plain callables without the tag are assumed to)."""
    return bool(getattr(LOSSES.get(name), "needs_reference", True))


# ---------------------------------------------------------------- helpers


def _ref(inp: LossInputs, loss: str) -> tuple[Tensor, Tensor]:
    if inp.ref_chosen_logps is None or inp.ref_rejected_logps is None:
        raise ValueError(f"loss {loss!r} needs reference log-probs (ref_chosen_logps / ref_rejected_logps)")
    return inp.ref_chosen_logps, inp.ref_rejected_logps


def _logratios(inp: LossInputs, loss: str) -> tuple[Tensor, Tensor]:
    ref_c, ref_r = _ref(inp, loss)
    return inp.policy_chosen_logps - ref_c, inp.policy_rejected_logps - ref_r


def _avg(logps: Tensor, lengths: Tensor) -> Tensor:
    return logps / lengths.to(logps.dtype).clamp(min=1.0)


def _metrics(inp: LossInputs, chosen_reward: Tensor, rejected_reward: Tensor) -> dict[str, Tensor]:
    c, r = chosen_reward.detach(), rejected_reward.detach()
    return {
        "reward_margin": (c - r).mean(),
        "reward_accuracy": (c > r).float().mean(),
        "chosen_reward": c.mean(),
        "rejected_reward": r.mean(),
        "chosen_logp": inp.policy_chosen_logps.detach().mean(),
        "rejected_logp": inp.policy_rejected_logps.detach().mean(),
    }


def _sigmoid_smoothed(logits: Tensor, eps: float) -> Tensor:
    """-(1-eps) log sigma(z) - eps log sigma(-z): conservative (label-smoothed) logistic loss."""
    return -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


# public names for plug-in losses (docs/solver.md, "Adding a loss")
log_ratios = _logratios
reward_metrics = _metrics
mean_logp = _avg


# ---------------------------------------------------------------- losses


@preference_loss("dpo")
def dpo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""DPO (Rafailov et al. 2023), conservative with label smoothing (cDPO).

    .. math::
        h = \log\frac{\pi(y_+|x)}{\pi_{ref}(y_+|x)} - \log\frac{\pi(y_-|x)}{\pi_{ref}(y_-|x)},\qquad
        L = -(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)

    Implicit reward :math:`\beta \log \pi/\pi_{ref}`. ``eps = label_smoothing`` (0 = plain DPO).
    """
    lc, lr = _logratios(inp, "dpo")
    losses = _sigmoid_smoothed(p.beta * (lc - lr), p.label_smoothing)
    return losses.mean(), _metrics(inp, p.beta * lc, p.beta * lr)


@preference_loss("dpo-robust")
def robust_dpo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""Robust DPO (Chowdhury et al. 2024): unbiased DPO under preference-label flips with rate eps.

    .. math::
        L = \frac{-(1-\varepsilon)\log\sigma(\beta h) + \varepsilon\log\sigma(-\beta h)}{1-2\varepsilon}

    with ``h`` as in :func:`dpo_loss` and ``eps = label_smoothing < 0.5``.
    """
    eps = p.label_smoothing
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"dpo-robust needs 0 <= label_smoothing < 0.5, got {eps}")
    lc, lr = _logratios(inp, "dpo-robust")
    z = p.beta * (lc - lr)
    losses = (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return losses.mean(), _metrics(inp, p.beta * lc, p.beta * lr)


@preference_loss("ipo")
def ipo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""IPO (Azar et al. 2023, Eq. 17) with tau = beta, on length-normalised log-ratios.

    .. math::
        h = \frac{1}{|y_+|}\log\frac{\pi(y_+|x)}{\pi_{ref}(y_+|x)}
          - \frac{1}{|y_-|}\log\frac{\pi(y_-|x)}{\pi_{ref}(y_-|x)},\qquad
        L = \left(h - \frac{1}{2\beta}\right)^2

    The per-token normalisation is not in the paper's equation; TRL uses it and reports it was confirmed by the
    IPO authors (summed log-ratios make the squared loss scale with length).
    """
    lc, lr = _logratios(inp, "ipo")
    h = _avg(lc, inp.chosen_lengths) - _avg(lr, inp.rejected_lengths)
    losses = (h - 1.0 / (2.0 * p.beta)) ** 2
    return losses.mean(), _metrics(inp, p.beta * lc, p.beta * lr)


@preference_loss("hinge")
def hinge_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""SLiC-HF hinge loss (Zhao et al. 2023) on the DPO log-ratio margin.

    .. math:: L = \max(0,\ 1 - \beta h)
    """
    lc, lr = _logratios(inp, "hinge")
    losses = torch.relu(1.0 - p.beta * (lc - lr))
    return losses.mean(), _metrics(inp, p.beta * lc, p.beta * lr)


def _sppo(inp: LossInputs, p: LossHyperparams, pw: Tensor, pl: Tensor, name: str):
    lc, lr = _logratios(inp, name)
    eta = 1.0 / p.beta
    losses = (lc - eta * (pw - 0.5)) ** 2 + (lr - eta * (pl - 0.5)) ** 2
    return losses.mean(), _metrics(inp, p.beta * lc, p.beta * lr)


@preference_loss("sppo")
def sppo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""SPPO (Wu et al. 2024, Algorithm 1, Eq. 4.7) with soft win probabilities.

    .. math::
        L = \left(\log\frac{\pi(y_+|x)}{\pi_t(y_+|x)} - \eta\,(P(y_+\succ\pi_t|x) - \tfrac12)\right)^2
          + \left(\log\frac{\pi(y_-|x)}{\pi_t(y_-|x)} - \eta\,(P(y_-\succ\pi_t|x) - \tfrac12)\right)^2,
        \qquad \eta = 1/\beta

    ``P(y > pi_t)`` is estimated by a pairwise preference model as the mean of ``P(y > y_j)`` over the
    policy's other samples for the prompt (``inp.chosen_win_prob`` / ``inp.rejected_win_prob``; pairs carry them
    in ``Pair.meta``). When a pair has none, the hard probabilities 1 (y+) and 0 (y-) are used, i.e. targets
    +-eta/2, which is :func:`sppo_hard_loss`. ``beta`` follows eva/SPPO's parametrisation (0.001 -> eta = 1000).
    """
    ones = torch.ones_like(inp.policy_chosen_logps)
    pw = inp.chosen_win_prob if inp.chosen_win_prob is not None else ones
    pl = inp.rejected_win_prob if inp.rejected_win_prob is not None else torch.zeros_like(ones)
    return _sppo(inp, p, pw.to(ones.dtype), pl.to(ones.dtype), "sppo")


@preference_loss("sppo-hard")
def sppo_hard_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""SPPO with hard probabilities P(y+ > pi_t) = 1, P(y- > pi_t) = 0 (TRL ``sppo_hard``).

    .. math::
        L = \left(\log\frac{\pi(y_+)}{\pi_t(y_+)} - \frac{1}{2\beta}\right)^2
          + \left(\log\frac{\pi(y_-)}{\pi_t(y_-)} + \frac{1}{2\beta}\right)^2
    """
    ones = torch.ones_like(inp.policy_chosen_logps)
    return _sppo(inp, p, ones, torch.zeros_like(ones), "sppo-hard")


@preference_loss("simpo", needs_reference=False)
def simpo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""SimPO (Meng et al. 2024, Eq. 6): reference-free, length-normalised, with a target margin gamma.

    .. math::
        L = -\log\sigma\left(\frac{\beta}{|y_+|}\log\pi(y_+|x) - \frac{\beta}{|y_-|}\log\pi(y_-|x) - \gamma\right)

    ``gamma`` is the absolute margin (SimPO's code sets it as ``gamma_beta_ratio * beta``; seed 001 appendix A
    uses beta = 10, gamma = 5). ``label_smoothing`` gives the conservative form, as in TRL's CPO trainer.
    Implicit reward :math:`\beta/|y| \log \pi(y|x)`.
    """
    rc = p.beta * _avg(inp.policy_chosen_logps, inp.chosen_lengths)
    rr = p.beta * _avg(inp.policy_rejected_logps, inp.rejected_lengths)
    losses = _sigmoid_smoothed(rc - rr - p.gamma, p.label_smoothing)
    return losses.mean(), _metrics(inp, rc, rr)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@preference_loss("orpo", needs_reference=False)
def orpo_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""ORPO (Hong et al. 2024, Eqs. 6-7): NLL on y+ plus lambda times an odds-ratio penalty; reference-free.

    .. math::
        \bar\ell(y) = \frac{1}{|y|}\log\pi(y|x),\quad
        \log\mathrm{odds}(y) = \bar\ell(y) - \log(1 - e^{\bar\ell(y)}),\\
        L = -\bar\ell(y_+) - \lambda \log\sigma\big(\log\mathrm{odds}(y_+) - \log\mathrm{odds}(y_-)\big)

    ``lambda = lam``. Implicit reward (for logging, as TRL) :math:`\lambda\,\bar\ell(y)`.
    """
    ac = _avg(inp.policy_chosen_logps, inp.chosen_lengths)
    ar = _avg(inp.policy_rejected_logps, inp.rejected_lengths)
    # avg log-probs are < 0 except for a degenerate 1-token response of probability 1; keep log1mexp finite
    ac_, ar_ = ac.clamp(max=-1e-6), ar.clamp(max=-1e-6)
    log_odds = (ac_ - ar_) - (_log1mexp(ac_) - _log1mexp(ar_))
    losses = -ac - p.lam * F.logsigmoid(log_odds)
    metrics = _metrics(inp, p.lam * ac, p.lam * ar)
    metrics["log_odds_ratio"] = log_odds.detach().mean()
    metrics["nll"] = (-ac).detach().mean()
    return losses.mean(), metrics


@preference_loss("dpo-nll")
def dpo_nll_loss(inp: LossInputs, p: LossHyperparams) -> tuple[Tensor, dict[str, Tensor]]:
    r"""DPO plus a length-normalised NLL term on the chosen response (RPO, Pang et al. 2024).

    .. math::
        L = L_{DPO} + \alpha\cdot\left(-\frac{1}{|y_+|}\log\pi(y_+|x)\right)

    ``alpha = nll_weight`` (eva's recipe: ``rpo_alpha = 1.0``; seed 001 Tables 13-15, "DPO + length-penalized
    NLL"). The NLL is averaged per sequence, then over pairs.
    """
    dpo, metrics = dpo_loss(inp, p)
    nll = (-_avg(inp.policy_chosen_logps, inp.chosen_lengths)).mean()
    metrics["nll"] = nll.detach()
    return dpo + p.nll_weight * nll, metrics
