"""`evarl` command line: run | validate | list | eval | report | train-rm | eval-rm.

`evarl run [CONFIG] [a.b=c ...]` with no arguments trains the embedded default (SmolLM2-135M-Instruct on the
verifiable instruction-following task) on a CPU. Errors in configs or input files print one clear message
naming the file, line or field, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from evarl.config import ConfigError, check_config

SUBCOMMAND_MODULES = [
    "evarl.eval.cli",
    "evarl.reward_training.cli",
    "evarl.solver.sft_cli",
    "evarl.eval.head_to_head",
    "evarl.export",
    "evarl.ablate",
]


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
    # the Python API: offline or online by `algorithm`; plug-ins are imported before validation
    from evarl import run

    config, overrides = _split(ns.args)
    run(config, overrides, progress=not ns.quiet)
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
    from evarl import package_version

    p = argparse.ArgumentParser(prog="evarl", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
    """Run one command; the exit code says how it went (evarl.failures): 0 done, 2 bad input or an expected
    failure (one line `evarl: error: ...` naming the file, line, field or URL; argparse usage errors too),
    1 an unexpected error (a short line with the path of the saved traceback), 130 interrupted."""
    from evarl.failures import (
        EXIT_BAD_INPUT,
        EXIT_BUG,
        EXIT_INTERRUPTED,
        bug_message,
        expected_message,
        save_traceback,
    )

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()
        ns = parser.parse_args(args)
        fn = getattr(ns, "fn", None) or ns.func
        return int(fn(ns) or 0)
    except KeyboardInterrupt:
        print("evarl: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # argparse usage errors keep their code; `raise SystemExit("why")` is bad input
        if isinstance(e.code, str):
            print(f"evarl: error: {e.code}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    except Exception as e:  # noqa: BLE001 - every failure ends here: one line, or a saved traceback
        message = expected_message(e)
        if message is not None:
            print(f"evarl: error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            saved = save_traceback(e, args)
        except OSError:  # pragma: no cover - nowhere to write: the traceback goes to the terminal
            traceback.print_exc()
            saved = None
        print(bug_message(e, saved), file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["Path", "main"]
