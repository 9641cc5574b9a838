"""evarl: open-ended, self-improving RL post-training of language models.

Implements eva (Evolving Alignment via Asymmetric Self-Play: a creator that estimates prompt informativeness,
samples and evolves prompts; a solver that learns from preference pairs) on top of an online iterative RLHF
workflow (RLHF Workflow; Self-learning and teacher-guided alignment).

The Python API (docs/python-api.md) is two functions; everything heavy is imported when they are called, so
``import evarl`` stays fast::

    import evarl

    cfg = evarl.load_config("my.yaml", ["rounds=1"])   # a path, a dict or a RunConfig, plus a.b=c overrides
    summary = evarl.run(cfg)                           # the same as `evarl run my.yaml rounds=1`
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evarl.config import RunConfig


def package_version() -> str:
    """The installed distribution's version (importlib.metadata); ``0+unknown`` when evarl is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evarl")
    except PackageNotFoundError:
        return "0+unknown"


def load_config(
    config: str | Path | dict[str, Any] | RunConfig | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A typed :class:`evarl.config.RunConfig` from a YAML path, a dict of the same shape or a RunConfig (None =
    the embedded default), with ``key.path=value`` overrides applied. Raises :class:`evarl.config.ConfigError`
    listing every structural problem; the semantic checks run in :func:`run` (or :func:`validate`)."""
    from evarl.config import load_config as load

    return load(config, overrides)


def validate(
    config: str | Path | dict[str, Any] | RunConfig | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """:func:`load_config`, then every semantic check of ``evarl validate`` (plug-ins imported first); raises
    :class:`evarl.config.ConfigError` with all problems, returns the config when it is valid."""
    from evarl.config import ConfigError, validate_config

    cfg = load_config(config, overrides)
    errors = validate_config(cfg)
    if errors:
        raise ConfigError(errors, str(config) if isinstance(config, str | Path) else None)
    return cfg


def run(
    config: str | Path | dict[str, Any] | RunConfig | None = None,
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) an evarl run, exactly as ``evarl run``: the offline eva loop, or the online loop when
    ``algorithm: online``. Returns the run's summary (also written to ``<run_dir>/summary.json``)."""
    cfg = load_config(config, overrides)
    if cfg.algorithm == "online":
        from evarl.online import run_online

        return run_online(cfg, progress=progress)
    from evarl.loop import run as run_offline

    return run_offline(cfg, progress=progress)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return package_version()
    if name == "RunConfig":
        from evarl.config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'evarl' has no attribute {name!r}")


__all__ = ["RunConfig", "__version__", "load_config", "package_version", "run", "validate"]
