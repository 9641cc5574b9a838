import json
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
    _, errors, _ = check_config(
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


# ---------------------------------------------------------------- model paths and the remote-code policy

ARMO = "RLHFlow/ArmoRM-Llama3-8B-v0.1"


def _model_dir(path: Path, **config: object) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def _remote_rm(path: Path) -> Path:
    return _model_dir(
        path,
        model_type="tiny_armo",
        architectures=["TinyArmoRM"],
        auto_map={
            "AutoConfig": "modeling_tiny.TinyConfig",
            "AutoModelForSequenceClassification": "modeling_tiny.TinyArmoRM",
        },
    )


def _rm_source(model: str, **extra: object) -> list[str]:
    src = {"name": "classifier", "model": model, **extra}
    return ["reward.sources=" + json.dumps([src])]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _cache_model(cache: Path, repo_id: str, **config: object) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    _model_dir(repo / "snapshots" / "abc123", **config)


def test_local_remote_code_reward_model_needs_the_sources_flag(tmp_path: Path, hf_cache: Path) -> None:
    rm = _remote_rm(tmp_path / "rm")
    _, errors, _ = check_config(None, _rm_source(str(rm)))
    (err,) = [e for e in errors if "remote code" in e]
    assert err.startswith(f"reward.sources[0].model: {rm} needs remote code (config.json auto_map")
    assert err.endswith("set reward.sources[0].trust_remote_code: true if you trust it")
    _, errors, _ = check_config(None, _rm_source(str(rm), trust_remote_code=True))
    assert errors == []
    # the older spelling in options is still honoured
    _, errors, _ = check_config(None, _rm_source(str(rm), options={"trust_remote_code": True}))
    assert errors == []


def test_auto_map_to_a_class_transformers_has_needs_no_remote_code(tmp_path: Path, hf_cache: Path) -> None:
    plain = _model_dir(
        tmp_path / "plain",
        model_type="llama",
        auto_map={"AutoModelForSequenceClassification": "modeling.LlamaForSequenceClassification"},
    )
    assert check_config(None, _rm_source(str(plain)))[1] == []
    custom_head = _model_dir(  # ArmoRM's shape: a known model_type with its own head class
        tmp_path / "custom",
        model_type="llama",
        auto_map={"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
    )
    assert any("needs remote code" in e for e in check_config(None, _rm_source(str(custom_head)))[1])
    # auto_map for another class than the one evarl loads: the policy is a causal LM
    assert check_config(None, [f"model.path={tmp_path / 'custom'}"])[1] == []


def test_armorm_by_name_when_not_cached_is_an_error_and_the_missing_cache_a_note(hf_cache: Path) -> None:
    _, errors, notes = check_config(None, _rm_source(ARMO))
    assert errors == [
        f"reward.sources[0].model: {ARMO} needs remote code (its reward head (LlamaForRewardModelWithGating: 19 "
        "objectives mixed by a gating network, .score) is defined in the repository's modeling_custom.py; without "
        "it transformers would load a plain LlamaForSequenceClassification with a randomly initialised score "
        "head); set reward.sources[0].trust_remote_code: true if you trust it"
    ]
    assert len(notes) == 1 and notes[0].startswith(f"reward.sources[0].model: {ARMO} is not in the local")
    assert str(hf_cache) in notes[0]
    _, errors, notes = check_config(None, _rm_source(ARMO, trust_remote_code=True))
    assert errors == [] and len(notes) == 1


def test_hub_model_in_the_local_cache_is_read_without_network(hf_cache: Path) -> None:
    _cache_model(
        hf_cache,
        "someorg/custom-rm",
        model_type="my_rm",
        auto_map={"AutoModelForSequenceClassification": "modeling_my.MyRM"},
    )
    _, errors, notes = check_config(None, _rm_source("someorg/custom-rm"))
    assert notes == []  # cached: nothing to say
    assert any(e.startswith("reward.sources[0].model: someorg/custom-rm needs remote code") for e in errors)
    _cache_model(hf_cache, "someorg/policy", model_type="my_lm", auto_map={"AutoModelForCausalLM": "m.MyLM"})
    _, errors, _ = check_config(None, ["model.path=someorg/policy", "creator.model=someorg/policy"])
    assert sorted(e.split(":")[0] for e in errors) == ["creator.model", "model.path"]
    assert all("set model.trust_remote_code: true" in e for e in errors)
    assert check_config(None, ["model.path=someorg/policy", "model.trust_remote_code=true"])[1] == []


def test_hub_id_form_is_checked(hf_cache: Path) -> None:
    _, errors, _ = check_config(None, ["model.path=bad org/na--me"])
    assert any(
        e.startswith("model.path: 'bad org/na--me' is neither an existing directory nor a valid hub id")
        for e in errors
    )
    _, errors, notes = check_config(None, ["model.path=good-org/model.v1_2"])
    assert errors == [] and notes[0].startswith("model.path: good-org/model.v1_2 is not in the local")


def test_missing_prompt_file_says_how_to_make_it() -> None:
    _, errors, _ = check_config(None, ["task.name=file", "task.train_file=data/nope.jsonl"])
    (err,) = errors
    assert err.startswith("task.train_file: file 'data/nope.jsonl' does not exist; prompts are a JSONL")
    assert "load_dataset('openbmb/UltraFeedback'" in err and "to_json('data/nope.jsonl')" in err


def test_creator_prompt_budget_must_be_positive() -> None:
    _, errors, _ = check_config(None, ["creator.max_prompt_chars=0"])
    assert errors == ["creator.max_prompt_chars: must be > 0, got 0"]


def test_cli_validate_prints_notes_and_passes(hf_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evarl.cli import main

    assert main(["validate", *_rm_source(ARMO, trust_remote_code=True)]) == 0
    out = capsys.readouterr()
    assert "note: reward.sources[0].model: RLHFlow/ArmoRM-Llama3-8B-v0.1 is not in the local" in out.err
    assert "default config: ok" in out.out
    assert main(["validate", *_rm_source(ARMO)]) == 2
    assert "set reward.sources[0].trust_remote_code: true" in capsys.readouterr().err
