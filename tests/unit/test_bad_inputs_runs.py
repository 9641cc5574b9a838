"""Bad inputs about run directories: each exits with status 2, one line naming the culprit (the config key, the
folder or the file), no traceback, and every file that was there before is unchanged (by hash)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evarl.config import load_config
from evarl.runs import LOCK_NAME, Run, RunLock
from tests.bad_input import refused as _refused


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    for key in list(RunLock.held):
        RunLock.release(Path(key))


def _user_files(folder: Path) -> None:
    """What a user might keep in a folder evarl must not touch."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("my: own config\n")
    (folder / "manifest.json").write_text(json.dumps({"project": "mine", "files": 3}))
    (folder / "report.md").write_text("# my report\n")
    (folder / "summary.json").write_text('{"mine": true}\n')


@pytest.mark.parametrize(
    "name",
    [
        ".",  # the run directory would be output_dir itself
        "a/b",  # a nested folder
        "a\\b",  # a Windows separator
        "/abs",  # an absolute path
        '""',  # empty
    ],
)
def test_name_that_leaves_output_dir(tmp_path: Path, capsys, name: str) -> None:
    _user_files(tmp_path / "out")
    _refused(["run", f"output_dir={tmp_path / 'out'}", f"name={name}"], tmp_path, capsys, "name:")


def test_validate_reports_a_bad_name_too(tmp_path: Path, capsys) -> None:
    _refused(
        ["validate", f"output_dir={tmp_path}", "name=.."], tmp_path, capsys, "name: must be a plain folder"
    )


def test_existing_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "thesis.tex").write_text("\\section{mine}")
    _refused(
        ["run", f"output_dir={tmp_path / 'runs'}", "name=r"],
        tmp_path,
        capsys,
        str(tmp_path / "runs" / "r"),
        "not an evarl run directory",
    )


def test_folder_with_someone_elses_manifest(tmp_path: Path, capsys) -> None:
    _user_files(tmp_path / "runs" / "r")
    _refused(
        ["run", f"output_dir={tmp_path / 'runs'}", "name=r"],
        tmp_path,
        capsys,
        str(tmp_path / "runs" / "r" / "manifest.json"),
        "not an evarl manifest",
    )


def test_folder_with_an_unreadable_manifest(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "manifest.json").write_text("{not json")
    _refused(
        ["run", f"output_dir={tmp_path / 'runs'}", "name=r"],
        tmp_path,
        capsys,
        str(tmp_path / "runs" / "r" / "manifest.json"),
        "not valid JSON",
    )


def test_output_dir_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").write_text("a file, not a folder")
    _refused(
        ["run", f"output_dir={tmp_path / 'runs'}", "name=r"],
        tmp_path,
        capsys,
        str(tmp_path / "runs"),
        "is a file",
    )


def test_run_directory_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").write_text("a file named like the run")
    _refused(
        ["run", f"output_dir={tmp_path / 'runs'}", "name=r"],
        tmp_path,
        capsys,
        str(tmp_path / "runs" / "r"),
        "is a file",
    )


def test_rerun_with_another_config_names_the_field(tmp_path: Path, capsys) -> None:
    base = [f"output_dir={tmp_path / 'runs'}", "name=r"]
    Run(load_config(None, [*base, "solver.beta=0.1"])).open()
    _refused(
        ["run", *base, "solver.beta=0.3"],
        tmp_path,
        capsys,
        str(tmp_path / "runs" / "r"),
        "solver.beta: 0.1 -> 0.3",
    )


def test_changed_output_of_a_finished_stage(tmp_path: Path, capsys) -> None:
    base = [f"output_dir={tmp_path / 'runs'}", "name=r"]
    run = Run(load_config(None, base)).open()
    out = run.dir / "seed_prompts.jsonl"
    run.stage("seed", lambda: out.write_text('{"id": "1", "prompt": "a"}\n') and None, [out])
    out.write_text('{"id": "1", "prompt": "edited by hand"}\n')
    _refused(["run", *base], tmp_path, capsys, str(out), "changed since stage seed finished")


HOLD = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"


def test_run_directory_in_use_by_another_process(tmp_path: Path, capsys) -> None:
    base = [f"output_dir={tmp_path / 'runs'}", "name=r"]
    run = Run(load_config(None, base)).open()
    run.close()
    lock = run.dir / LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        _refused(
            ["run", *base], tmp_path, capsys, str(lock), f"process {holder.pid} is using this run directory"
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_report_into_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    _user_files(mine)
    _refused(["report", str(mine)], tmp_path, capsys, str(mine), "not an evarl run directory", "--out")


def test_report_out_to_a_non_empty_foreign_folder(tmp_path: Path, capsys) -> None:
    run = Run(load_config(None, [f"output_dir={tmp_path / 'runs'}", "name=r"])).open()
    _user_files(tmp_path / "docs")
    _refused(
        ["report", str(run.dir), "--out", str(tmp_path / "docs")],
        tmp_path,
        capsys,
        str(tmp_path / "docs"),
        "Nothing was changed",
    )
