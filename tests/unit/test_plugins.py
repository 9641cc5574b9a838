"""Plug-ins: a config's `plugins:` modules and `evarl.plugins` entry points register parts that YAML names.

`tests/unit/sample_plugin.py` registers a metric, a reward function and a loss; a tiny `evarl run` (in process,
on the tiny random Llama) names all three and must call each of them. An entry point is tested with a real
distribution's metadata (a `*.dist-info` folder on the path of a fresh `evarl list` process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from evarl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tiny_run_config(tmp: Path, model: Path) -> dict:
    return {
        "name": "plugged",
        "output_dir": str(tmp / "runs"),
        "seed": 1,
        "rounds": 1,
        "threads": 1,
        "model": {"path": str(model)},
        "generation": {"n": 2, "max_new_tokens": 8, "temperature": 1.0, "batch_size": 16},
        "task": {"train_prompts": 6, "heldout_prompts": 2},
        "creator": {"methods": ["constraint"], "num_evolutions": 2},
        "solver": {"batch_size": 2, "epochs": 1, "max_length": 160, "max_prompt_length": 120},
        "eval": {"max_new_tokens": 4},
        "tracking": {"backends": []},
    }


def test_a_run_uses_the_plugin_metric_reward_and_loss(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = _tiny_run_config(tmp_path, tiny_model_dir)
    cfg.update(
        plugins=["tests.unit.sample_plugin"],
        reward={"sources": [{"name": "sample_length"}]},
    )
    cfg["creator"]["metric"] = "sample_spread"
    cfg["solver"]["loss"] = "sample_hinge"
    path = tmp_path / "plugged.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--quiet"]) == 0

    from tests.unit.sample_plugin import CALLS

    assert CALLS["metric"] > 0 and CALLS["reward"] > 0 and CALLS["loss"] > 0, CALLS
    run = tmp_path / "runs" / "plugged"
    info = [json.loads(x) for x in (run / "round-001" / "info.jsonl").read_text().splitlines()]
    assert all(
        r["value"] == max(r["rewards"]) - min(r["rewards"]) for r in info
    )  # the plug-in metric's values
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["round-001/train"]["counts"]["steps"] >= 1  # trained with the plug-in loss


def _module(tmp: Path, body: str) -> str:
    name = f"user_plugin_{uuid.uuid4().hex[:8]}"
    (tmp / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_validate_knows_plugin_names_only_when_the_config_lists_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    metric = f"m_{uuid.uuid4().hex[:6]}"
    name = _module(
        tmp_path,
        f"""
        from evarl.registry import METRICS

        @METRICS.register({metric!r})
        def spread(rewards):
            return max(rewards) - min(rewards)
        """,
    )
    assert main(["validate", f"creator.metric={metric}"]) == 2
    assert f"creator.metric: unknown metric {metric!r}" in capsys.readouterr().err
    assert main(["validate", f"creator.metric={metric}", f"plugins=[{name}]"]) == 0
    assert ": ok" in capsys.readouterr().out
    main(["list", "metric"])
    assert metric in capsys.readouterr().out


def test_entry_point_plugins_are_loaded_with_the_builtins(tmp_path: Path) -> None:
    metric = f"ep_{uuid.uuid4().hex[:6]}"
    module = _module(
        tmp_path,
        f"""
        from evarl.registry import METRICS

        @METRICS.register({metric!r})
        def ep_metric(rewards):
            '''A metric from an installed package's entry point.'''
            return 0.0
        """,
    )
    dist = tmp_path / "evarl_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evarl-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[evarl.plugins]\ndemo = {module}\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    code = "import sys; from evarl.cli import main; sys.exit(main(['list', 'metric']))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert metric in proc.stdout and "A metric from an installed package's entry point." in proc.stdout


def test_version_comes_from_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    import evarl

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"evarl {version('evarl')}"
    assert evarl.__version__ == version("evarl")
