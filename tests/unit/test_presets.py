"""Appendix-A presets: the table's values and the precedence of explicit settings."""

from __future__ import annotations

import pytest

from evarl.config import SolverConfig, build_config, validate_config
from evarl.solver.presets import PRESETS, apply_preset


def test_table_values_seed_001_appendix_a() -> None:
    d, o, s, p = PRESETS["dpo"], PRESETS["orpo"], PRESETS["simpo"], PRESETS["sppo"]
    assert [x["learning_rate"] for x in (d, o, s, p)] == [5e-7, 5e-7, 8e-7, 5e-7]
    assert [x["scheduler"] for x in (d, o, s, p)] == ["cosine", "cosine", "cosine", "linear"]
    assert (d["beta"], s["beta"], s["gamma"], p["beta"], o["lam"]) == (0.05, 10.0, 5.0, 0.001, 0.5)
    assert [x["epochs"] for x in (d, o, s, p)] == [2, 1, 1, 6]
    assert [x["effective_batch_size"] for x in (d, o, s, p)] == [8, 8, 32, 8]
    assert [x["max_length"] for x in (d, o, s, p)] == [2048, 2048, 2048, 1024]
    assert [x["max_prompt_length"] for x in (d, o, s, p)] == [1024, 1024, 1024, 512]
    assert [x["optimizer"] for x in (d, o, s, p)] == ["adamw", "adamw", "adamw", "rmsprop"]
    assert all(x["warmup_ratio"] == 0.1 for x in (d, o, s, p))


def test_preset_fills_defaults_and_sets_loss() -> None:
    cfg = apply_preset(SolverConfig(preset="sppo"))
    assert (cfg.loss, cfg.beta, cfg.optimizer, cfg.scheduler, cfg.epochs) == (
        "sppo",
        0.001,
        "rmsprop",
        "linear",
        6,
    )
    # appendix A's effective batch is the global batch over all GPUs; grad_accum is left to the engine
    assert (cfg.global_batch_size, cfg.grad_accum) == (8, 1)
    # SPPO's reference is the current iterate pi_t (the policy the round starts from), not pi_0
    assert cfg.reference == "previous"
    assert apply_preset(SolverConfig(preset="dpo")).reference == "initial"


def test_fields_changed_from_default_win_without_explicit_list() -> None:
    cfg = apply_preset(SolverConfig(preset="simpo", beta=2.5, batch_size=8))
    assert cfg.beta == 2.5 and cfg.gamma == 5.0
    assert (cfg.batch_size, cfg.global_batch_size, cfg.grad_accum) == (8, 32, 1)


def test_explicit_fields_win_even_when_equal_to_default() -> None:
    cfg = apply_preset(SolverConfig(preset="dpo", beta=0.1, grad_accum=1), explicit={"beta", "grad_accum"})
    assert cfg.beta == 0.1 and cfg.grad_accum == 1 and cfg.learning_rate == 5e-7
    # an explicit grad_accum sizes the step by hand: no global batch is imposed
    assert cfg.global_batch_size is None


def test_global_batch_from_the_preset_unless_the_user_set_it() -> None:
    assert build_config({"solver": {"preset": "rlhflow-dpo"}}).solver.global_batch_size == 128
    assert (
        build_config({"solver": {"preset": "simpo", "global_batch_size": 64}}).solver.global_batch_size == 64
    )
    user_accum = build_config({"solver": {"preset": "simpo", "grad_accum": 3}}).solver
    assert (user_accum.global_batch_size, user_accum.grad_accum) == (None, 3)
    assert apply_preset(SolverConfig(preset="dpo", grad_accum=2)).global_batch_size is None


@pytest.mark.parametrize(
    ("world", "batch", "ok"),
    [("1", 4, True), ("2", 4, True), ("8", 1, True), ("8", 4, False), ("3", 1, False)],
)
def test_global_batch_must_split_over_the_launched_processes(
    monkeypatch: pytest.MonkeyPatch, world: str, batch: int, ok: bool
) -> None:
    monkeypatch.setenv("WORLD_SIZE", world)
    cfg = build_config({"solver": {"preset": "dpo", "batch_size": batch}})  # global batch 8
    errs = [e for e in validate_config(cfg) if e.startswith("solver.global_batch_size")]
    assert (errs == []) is ok, errs
    if not ok:
        assert f"x {world} processes" in errs[0] and f"divisible by {batch * int(world)}" in errs[0]


def test_no_preset_is_identity_and_unknown_preset_raises() -> None:
    c = SolverConfig()
    assert apply_preset(c) is c
    with pytest.raises(KeyError, match="known: dpo"):
        apply_preset(SolverConfig(preset="nope"))


def test_every_preset_validates() -> None:
    for name in PRESETS:
        cfg = build_config({"solver": {"preset": name}})
        cfg.solver = apply_preset(cfg.solver)
        errs = [e for e in validate_config(cfg) if e.startswith("solver")]
        assert errs == [], (name, errs)
