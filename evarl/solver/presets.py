"""Solver hyper-parameter presets from the papers (``solver.preset``).

``dpo``, ``orpo``, ``simpo``, ``sppo`` are the columns of seed 001 (eva v2) appendix A, "Hyperparameter
settings", which follows the original settings of ORPO (Hong et al. 2024), SimPO (Meng et al. 2024) and SPPO
(Wu et al. 2024)::

    Hyperparameter / Loss     DPO     ORPO    SimPO   SPPO
    learning rate             5e-7    5e-7    8e-7    5e-7
    learning rate scheduler   cosine  cosine  cosine  linear
    beta                      0.05    /       10      0.001
    gamma                     /       /       5       /
    lambda                    /       0.5     /       /
    no. epochs per iter       2       1       1       6
    warmup ratio per iter     0.1     0.1     0.1     0.1
    effective batch size      8       8       32      8
    max length                2048    2048    2048    1024
    max prompt length         1024    1024    1024    512
    optimizer                 adamw   adamw   adamw   rmsprop

``sppo`` also sets ``reference: previous``: SPPO's update rule measures log(pi/pi_t) against the iterate
pi_t that generated the round's responses, not against pi_0 (eva's SPPO arm follows it).

Two more presets come from the other settings the seeds report:

* ``dpo-nll``: the ``dpo`` column with the length-normalised NLL term of seed 001 Tables 13-15 (eva's RPO recipe,
  ``rpo_alpha = 1.0``).
* ``rlhflow-dpo``: seed 003 §3.3 (RLHF Workflow): DPO, peak lr 5e-7, cosine, warmup 0.03, global batch 128,
  KL coefficient eta = beta = 0.1, 2 epochs on the historical data.

Precedence: the preset fills the solver fields first, then the user's explicit settings win. Pass the names
of the fields the user set (``explicit``, e.g. the keys of the ``solver:`` mapping of the YAML merged with the
``solver.x=y`` overrides); without it, a preset value replaces a field only while the field still has its
dataclass default (so an explicit setting equal to the default cannot be told apart and is overridden).

Batch size: appendix A's "effective batch size" counts pairs per optimizer step over *all* GPUs (the paper
trains on 8xH100). A preset therefore sets ``solver.global_batch_size`` (per-device ``batch_size`` x
``grad_accum`` x processes), not a per-process ``grad_accum``; the training engine derives
``grad_accum = global_batch_size / (batch_size x world_size)`` once the world size is known, so the same
preset means the same optimisation on 1 GPU, 8 GPUs or the CPU. ``validate_config`` checks the division
against the launcher's ``WORLD_SIZE``. A user who sets ``global_batch_size`` or ``grad_accum`` keeps it: an
explicit ``grad_accum`` means the user sizes the per-process step by hand, and no global batch is imposed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from evarl.registry import SOLVER_PRESETS

_COMMON = {"warmup_ratio": 0.1, "max_length": 2048, "max_prompt_length": 1024, "optimizer": "adamw"}

PRESETS: dict[str, dict[str, Any]] = {
    "dpo": {
        **_COMMON,
        "loss": "dpo",
        "learning_rate": 5e-7,
        "scheduler": "cosine",
        "beta": 0.05,
        "epochs": 2,
        "effective_batch_size": 8,
    },
    "orpo": {
        **_COMMON,
        "loss": "orpo",
        "learning_rate": 5e-7,
        "scheduler": "cosine",
        "lam": 0.5,
        "epochs": 1,
        "effective_batch_size": 8,
    },
    "simpo": {
        **_COMMON,
        "loss": "simpo",
        "learning_rate": 8e-7,
        "scheduler": "cosine",
        "beta": 10.0,
        "gamma": 5.0,
        "epochs": 1,
        "effective_batch_size": 32,
    },
    "sppo": {
        **_COMMON,
        "loss": "sppo",
        "learning_rate": 5e-7,
        "scheduler": "linear",
        "beta": 0.001,
        "epochs": 6,
        "effective_batch_size": 8,
        "max_length": 1024,
        "max_prompt_length": 512,
        "optimizer": "rmsprop",
        # SPPO's update (Wu et al. 2024, arXiv:2405.00675, Eq. 4.7) regresses log(pi/pi_t) towards
        # eta (P(y > pi_t) - 1/2): the reference is the current iterate pi_t, the policy the round starts from
        "reference": "previous",
    },
    "dpo-nll": {
        **_COMMON,
        "loss": "dpo-nll",
        "learning_rate": 5e-7,
        "scheduler": "cosine",
        "beta": 0.05,
        "nll_weight": 1.0,
        "epochs": 2,
        "effective_batch_size": 8,
    },
    "rlhflow-dpo": {
        **_COMMON,
        "loss": "dpo",
        "learning_rate": 5e-7,
        "scheduler": "cosine",
        "warmup_ratio": 0.03,
        "beta": 0.1,
        "epochs": 2,
        "effective_batch_size": 128,
    },
}


def apply_preset(cfg: Any, explicit: Collection[str] | None = None) -> Any:
    """A copy of the SolverConfig ``cfg`` with ``PRESETS[cfg.preset]`` applied (no-op without a preset).

    ``explicit``: names of solver fields the user set; they keep the user's value. Without it, only fields
    still equal to their dataclass default are filled (see the module docstring). The table's
    ``effective_batch_size`` becomes ``global_batch_size`` unless ``global_batch_size`` or ``grad_accum`` was
    set; ``grad_accum`` itself is left for the training engine to derive from the world size.
    """
    if cfg.preset is None:
        return cfg
    if cfg.preset not in PRESETS:
        raise KeyError(f"solver.preset: unknown preset {cfg.preset!r}; known: {', '.join(sorted(PRESETS))}")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}

    def settable(name: str) -> bool:
        if explicit is not None:
            return name not in explicit
        return getattr(cfg, name) == defaults.get(name)

    updates: dict[str, Any] = {}
    preset = dict(PRESETS[cfg.preset])
    effective = preset.pop("effective_batch_size", None)
    for name, value in preset.items():
        if settable(name):
            updates[name] = value
    if effective is not None and settable("global_batch_size") and settable("grad_accum"):
        updates["global_batch_size"] = effective
    return dataclasses.replace(cfg, **updates)


for (
    _name
) in PRESETS:  # each name maps to the function that applies it (evarl.config imports no solver module)
    SOLVER_PRESETS.register(_name)(apply_preset)
