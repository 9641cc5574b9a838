"""Shared checks of the bad-input catalogue (tests/unit/test_bad_inputs*.py): the CLI, run in-process, refuses
an input with exit 2 and one `evarl: error:` message naming the culprit, prints no traceback, and changes no file
that existed before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from evarl.cli import main


def snapshot(root: Path, ignore_suffixes: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (files ending in ``ignore_suffixes`` left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(ignore_suffixes or ("\0",))
    }


def refused(
    args: list[str],
    root: Path,
    capsys: pytest.CaptureFixture[str],
    *culprits: str,
    one_line: bool = False,
    ignore_suffixes: tuple[str, ...] = (),
) -> str:
    """Run ``evarl`` with ``args``; assert exit 2, a message naming every culprit (on one line if ``one_line``),
    no traceback, and that no file under ``root`` changed, appeared or vanished. Returns the message."""
    before = snapshot(root, ignore_suffixes)
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("evarl: error:") and "Traceback" not in err, err
    if one_line:
        assert len(err.strip().splitlines()) == 1, err
    for c in culprits:
        assert c in err, (c, err)
    assert snapshot(root, ignore_suffixes) == before
    return err
