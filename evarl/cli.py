"""`evarl` command line: run | validate | list | eval | report | train-rm | eval-rm.

`evarl run [CONFIG] [a.b=c ...]` with no arguments trains the embedded default (SmolLM2-135M-Instruct on the
verifiable instruction-following task) on a CPU. Errors in configs or input files print one clear message
naming the file, line or field, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from evarl.config import ConfigError, check_config, load_config

SUBCOMMAND_MODULES = ["evarl.eval.cli", "evarl.reward_training.cli"]


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    config = None
    overrides = []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif config is None:
            config = a
        else:
            raise ConfigError(
                [f"{a}: only one config file may be given (overrides look like key.path=value)"]
            )
    return config, overrides


def cmd_run(ns: argparse.Namespace) -> int:
    from evarl.loop import run

    config, overrides = _split(ns.args)
    cfg = load_config(config, overrides)
    if cfg.algorithm == "online":
        from evarl.online import run_online

        run_online(cfg, progress=not ns.quiet)
    else:
        run(cfg, progress=not ns.quiet)
    return 0


def cmd_validate(ns: argparse.Namespace) -> int:
    config, overrides = _split(ns.args)
    cfg, errors, notes = check_config(config, overrides)
    for note in notes:  # worth knowing, not wrong: validation still passes
        print(f"note: {note}", file=sys.stderr)
    if errors:
        raise ConfigError(errors, config)
    print(f"{config or 'default config'}: ok (run directory {cfg.run_dir})")
    return 0


def cmd_list(ns: argparse.Namespace) -> int:
    from evarl.registry import ALL

    for reg in ALL:
        if ns.kind and ns.kind not in (reg.kind, reg.kind.replace(" ", "-")):
            continue
        plural = reg.kind + ("es" if reg.kind.endswith("s") else "s")
        print(f"{plural} — {reg.doc}:")
        for name in reg.names():
            print(f"  {name:<22} {reg.describe(name)}")
    try:
        from evarl.solver.presets import PRESETS

        if not ns.kind or ns.kind == "preset":
            print("solver presets (solver.preset) — seed 001 appendix A:")
            for name in sorted(PRESETS):
                print(f"  {name}")
    except ImportError:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evarl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) an eva training run")
    r.add_argument("args", nargs="*", help="[CONFIG.yaml] [key.path=value ...]")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(fn=cmd_run)
    v = sub.add_parser("validate", help="check a config without loading any model")
    v.add_argument("args", nargs="*", help="[CONFIG.yaml] [key.path=value ...]")
    v.set_defaults(fn=cmd_validate)
    li = sub.add_parser("list", help="list registered plug-ins by kind and config name")
    li.add_argument("kind", nargs="?", help="only this kind (e.g. metric, loss)")
    li.set_defaults(fn=cmd_list)
    for mod in SUBCOMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        m.add_subcommands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from evarl.data_io import DataError
    from evarl.errors import ResumeError, WorkerLost
    from evarl.rewards.combine import RewardBuildError
    from evarl.runs import RunExistsError

    parser = build_parser()
    ns = parser.parse_args(argv)
    fn = getattr(ns, "fn", None) or ns.func
    try:
        return int(fn(ns) or 0)
    except (
        ConfigError,
        DataError,
        RunExistsError,
        FileNotFoundError,
        RewardBuildError,
        ResumeError,
        WorkerLost,
    ) as e:
        print(f"evarl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evarl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Path", "main"]
