"""Nothing lost: the three ways evarl used to lose or mix up work, on real runs of a tiny random Llama.

(a) `name=..` made the run directory the parent of output_dir and overwrote the config.yaml and manifest.json
    kept there; (b) `evarl report DIR` on a folder that is not a run overwrote its report.md and summary.json;
(c) after `round-002/train/model` was deleted, extending the run to 3 rounds trained round 3 from round 1's
    model; a deleted scores file of a finished stage (here `round-002/train_scores.jsonl`) went unnoticed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from evarl.cli import main
from evarl.runs import output_digest


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


resume = _load("_run_resume_helpers", Path(__file__).with_name("test_run_resume.py"))


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# a tiny run: what the old code went on to do with `name=..` (it wrote config.yaml and manifest.json first)
TINY = ["rounds=1", "creator.enabled=false", "eval.enabled=false", "task.train_prompts=2", "generation.n=2"]
TINY += ["generation.max_new_tokens=4", "reward.sources=[{name: length}]", "threads=1"]


def test_a_name_dotdot_cannot_write_beside_output_dir(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.yaml").write_text("my: project config\n")
    (proj / "manifest.json").write_text(json.dumps({"my": "manifest"}))
    before = _snapshot(tmp_path)
    rc = main(["run", f"output_dir={proj / 'runs'}", "name=..", f"model.path={tiny_model_dir}", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "name: must be a plain folder name inside output_dir" in err and "'..'" in err
    assert _snapshot(tmp_path) == before and not (proj / "runs").exists()


def test_b_report_never_overwrites_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("# my own report\n")
    (mine / "summary.json").write_text('{"mine": true}\n')
    before = _snapshot(tmp_path)
    assert main(["report", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"{mine} is not an evarl run directory" in err and "--out" in err
    assert _snapshot(tmp_path) == before
    # a report still goes into a new folder, and into it again on a later call (into a run: test_eval_tiny)
    report_fixture = _load("_eval_report_fixture", Path(__file__).parents[1] / "unit" / "test_eval_report.py")
    run = report_fixture.make_run(tmp_path / "runs", "demo", rounds=1)
    for _ in range(2):
        assert main(["report", str(run), "--out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "report.md").exists()


def test_c_deleted_outputs_are_redone_in_lineage(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = resume._config(tmp_path, tiny_model_dir, "lineage")
    # the solver's stages are what lineage is about: no creator, no evaluation, few short samples, and a length
    # reward (random text of the tiny model almost never ties on length, so every round has pairs to train on)
    fast = ["creator.enabled=false", "eval.enabled=false", "task.train_prompts=8", "generation.n=2"]
    fast += [
        "generation.max_new_tokens=8",
        "reward.sources=[{name: length}]",
        "solver.max_prompt_length=96",
        "solver.epochs=1",
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "evarl.cli", "run", str(cfg), *fast, *extra, "--quiet"]
        res = subprocess.run(cmd, env=resume._env(tmp_path), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    run()
    rd = tmp_path / "runs" / "lineage"
    model2 = rd / "round-002" / "train" / "model"
    weights2 = output_digest(model2 / "model.safetensors")
    shutil.rmtree(model2)

    scores2 = rd / "round-002" / "train_scores.jsonl"
    scores_bytes = scores2.read_bytes()
    scores2.unlink()

    res = run("rounds=3")
    assert "redoing stage round-002/train_score" in res.stderr  # the first stage whose output is gone
    assert scores2.read_bytes() == scores_bytes  # noticed and rebuilt, identically
    assert f"round 3/3: policy {model2}" in res.stdout  # not round 1's model
    assert output_digest(model2 / "model.safetensors") == weights2  # the same lineage rebuilt the same model
    manifest = json.loads((rd / "manifest.json").read_text())
    assert all(v["status"] == "done" for v in manifest["stages"].values())
    assert (rd / "round-003" / "train" / "model").is_dir()
