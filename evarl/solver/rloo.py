"""RLOO (REINFORCE Leave-One-Out; Ahmadian et al. 2024), the online solver of eva (seed 001 §4, Table 1).

For a prompt with k sampled responses and rewards r_1..r_k, each response's baseline is the mean reward of the
*other* k-1 responses:

    A_i = r_i - 1/(k-1) * sum_{j != i} r_j ,      loss = - 1/N * sum_i A_i * log pi_theta(y_i | x)

with log pi the summed response log-prob and N the number of responses. With a KL coefficient beta the reward is
shaped per sequence, r_i <- r_i - beta * (log pi_theta(y_i|x) - log pi_ref(y_i|x)) (detached), as in TRL's RLOO.
Prompts with fewer than two valid responses carry no baseline and are left out.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def rloo_advantages(rewards: Tensor, group: Tensor) -> Tensor:
    """Leave-one-out advantages. `rewards` [N]; `group` [N] prompt index of each response.

    Responses in groups of size 1 get advantage 0 (no baseline exists)."""
    out = torch.zeros_like(rewards)
    for g in torch.unique(group):
        m = group == g
        k = int(m.sum())
        if k < 2:
            continue
        r = rewards[m]
        out[m] = r - (r.sum() - r) / (k - 1)
    return out


def rloo_loss(
    policy_logps: Tensor,
    rewards: Tensor,
    group: Tensor,
    ref_logps: Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The RLOO objective (see module docstring) and its metrics."""
    shaped = rewards.clone()
    kl = torch.zeros_like(rewards)
    if ref_logps is not None and kl_coef > 0:
        kl = (policy_logps.detach() - ref_logps).to(rewards.dtype)
        shaped = shaped - kl_coef * kl
    adv = rloo_advantages(shaped, group).to(policy_logps.dtype)
    loss = -(adv * policy_logps).mean()
    return loss, {
        "advantage_abs": adv.abs().mean().detach(),
        "reward": rewards.mean().detach(),
        "kl": kl.mean().detach(),
    }
