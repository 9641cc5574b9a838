from pathlib import Path

import pytest

from evarl.config import ConfigError, RunConfig, build_config, check_config, load_config, parse_overrides


def test_defaults_and_overrides() -> None:
    cfg = load_config(
        None, ["solver.beta=0.2", "creator.methods=[persona,constraint]", "rounds=3", "creator.enabled=false"]
    )
    assert cfg.solver.beta == 0.2
    assert cfg.creator.methods == ["persona", "constraint"]
    assert cfg.rounds == 3
    assert cfg.creator.enabled is False
    assert isinstance(cfg, RunConfig)


def test_yaml_file_then_override(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nsolver:\n  loss: ipo\n  beta: 0.5\n")
    cfg = load_config(p, ["solver.beta=0.3"])
    assert (cfg.name, cfg.solver.loss, cfg.solver.beta) == ("x", "ipo", 0.3)


def test_unknown_key_names_its_path() -> None:
    with pytest.raises(ConfigError) as e:
        build_config({"solver": {"betta": 0.1}})
    assert "solver.betta: unknown key" in str(e.value)


def test_type_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as e:
        build_config({"rounds": "many", "solver": {"beta": "high"}, "creator": {"methods": 3}})
    msg = str(e.value)
    assert "rounds: expected an integer" in msg
    assert "solver.beta: expected a number" in msg
    assert "creator.methods: expected a list" in msg


def test_reward_sources_list_of_dataclasses() -> None:
    cfg = build_config(
        {"reward": {"sources": [{"name": "verifier", "mode": "strict"}, {"name": "length", "weight": -0.01}]}}
    )
    assert cfg.reward.sources[1].name == "length" and cfg.reward.sources[1].weight == -0.01


def test_check_config_collects_structural_and_semantic(tmp_path: Path) -> None:
    _, errors = check_config(
        None, ["foo=1", "solver.beta=-1", f"model.path={tmp_path / 'missing'}", "creator.metric=nope"]
    )
    joined = "\n".join(errors)
    assert "foo: unknown key" in joined
    assert "solver.beta: must be > 0" in joined
    assert "model.path: model path" in joined and "does not exist" in joined
    assert "creator.metric: unknown metric 'nope'" in joined


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nsolver: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:" in str(e.value)


def test_parse_overrides_requires_equals() -> None:
    with pytest.raises(ConfigError):
        parse_overrides(["solver.beta"])


def test_preset_fills_fields_but_explicit_settings_win() -> None:
    cfg = load_config(None, ["solver.preset=sppo", "solver.beta=0.1"])
    assert cfg.solver.optimizer == "rmsprop" and cfg.solver.scheduler == "linear"
    assert cfg.solver.beta == 0.1  # set explicitly, equal to the default: still the user's value
    assert load_config(None, ["solver.preset=sppo"]).solver.beta == 0.001
