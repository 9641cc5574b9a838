"""Bad plug-ins and tracker settings: exit 2, one message naming the culprit, no traceback, nothing changed.

Each case runs `evarl run` (or `evarl validate`) in process on a config that names the bad plug-in module; the
config file and a pre-existing run directory must be byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from evarl.cli import main


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _module(tmp: Path, body: str) -> str:
    name = f"bad_plugin_{uuid.uuid4().hex[:8]}"
    (tmp / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def _setup(tmp: Path, extra: dict) -> Path:
    """A config under tmp plus a pre-existing run directory with a file in it."""
    run = tmp / "runs" / "existing"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("keep me\n")
    cfg = {"name": "existing", "output_dir": str(tmp / "runs"), **extra}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], tmp: Path, *needles: str) -> str:
    before = _snapshot(tmp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert _snapshot(tmp) == before
    return err


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mods = tmp_path / "mods"
    mods.mkdir()
    monkeypatch.syspath_prepend(str(mods))
    return mods


def test_a_plugin_module_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _setup(tmp_path, {"plugins": ["no_such_evarl_plugin.metrics"]})
    err = _fails(
        ["run", str(cfg), "--quiet"],
        capsys,
        tmp_path,
        "plugins[0]",
        "'no_such_evarl_plugin.metrics' not found",
    )
    assert "unknown" not in err  # one message: no follow-on errors about the names it would have registered


def test_a_plugin_module_that_raises_on_import(
    tmp_path: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _module(plugin_dir, 'import os\n\nraise RuntimeError("needs MY_API_KEY")\n')
    cfg = _setup(tmp_path, {"plugins": ["tests.unit.sample_plugin", name]})
    _fails(
        ["run", str(cfg), "--quiet"],
        capsys,
        tmp_path,
        f"plugins[1]: plug-in module {name!r} failed to import: RuntimeError: needs MY_API_KEY",
        f"{name}.py:3",
    )


def test_a_plugin_module_with_a_syntax_error(
    tmp_path: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _module(plugin_dir, "def broken(:\n    pass\n")
    cfg = _setup(tmp_path, {"plugins": [name]})
    _fails(
        ["validate", str(cfg)],
        capsys,
        tmp_path,
        f"plugins[0]: plug-in module {name!r}",
        "SyntaxError",
        f"{name}.py:1",
    )


def test_a_plugin_that_takes_a_builtin_name(
    tmp_path: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _module(
        plugin_dir,
        """
        from evarl.solver.losses import preference_loss

        @preference_loss("dpo")
        def my_dpo(inp, p):
            raise AssertionError("never called")
        """,
    )
    cfg = _setup(tmp_path, {"plugins": [name]})
    _fails(
        ["run", str(cfg), "--quiet"],
        capsys,
        tmp_path,
        f"plugins[0]: plug-in module {name!r}",
        "loss 'dpo' is already registered",
    )


def test_a_plugin_module_that_imports_a_missing_dependency(
    tmp_path: Path, plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _module(plugin_dir, "import evarl_missing_dependency_xyz\n")
    cfg = _setup(tmp_path, {"plugins": [name]})
    _fails(
        ["run", str(cfg), "--quiet"],
        capsys,
        tmp_path,
        f"plugins[0]: plug-in module {name!r} failed to import: ModuleNotFoundError",
        "evarl_missing_dependency_xyz",
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (5, "plugins: expected a list, got int"),
        (["my-plugin.py"], "plugins[0]: 'my-plugin.py' is not a module name"),
        ([""], "plugins[0]: '' is not a module name"),
    ],
)
def test_plugins_that_are_not_module_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object, needle: str
) -> None:
    cfg = _setup(tmp_path, {"plugins": value})
    _fails(["run", str(cfg), "--quiet"], capsys, tmp_path, needle)


def test_an_unknown_or_missing_tracker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _setup(tmp_path, {"tracking": {"backends": ["tensorboard", "mlflow"]}})
    _fails(["run", str(cfg), "--quiet"], capsys, tmp_path, "tracking.backends[1]: unknown tracker 'mlflow'")


def test_an_entry_point_that_fails(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    name = _module(mods, 'raise ImportError("half-installed")\n')
    dist = mods / "broken_evarl_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-evarl-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[evarl.plugins]\nbroken = {name}\n")
    cfg = _setup(tmp_path, {})
    before = _snapshot(tmp_path)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(mods), str(root)]))
    code = f"import sys; from evarl.cli import main; sys.exit(main(['validate', {str(cfg)!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"entry point evarl.plugins:broken: plug-in module {name!r} failed to import" in proc.stderr
    assert "ImportError: half-installed" in proc.stderr
    assert _snapshot(tmp_path) == before
