"""The shipped configs stay true: the default file is the built-in default, every file parses."""

from dataclasses import asdict
from pathlib import Path

import pytest

from evarl.config import RunConfig, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_default_yaml_is_the_builtin_default() -> None:
    assert asdict(load_config(Path(__file__).parents[2] / "configs" / "default.yaml")) == asdict(RunConfig())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses(path: Path) -> None:
    load_config(path)  # structural errors raise; paper recipes name models/files that need GPUs and data
