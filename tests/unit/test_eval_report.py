"""Reports from a synthetic-but-complete run directory (the files the loop writes): per-round markdown,
the HTML/markdown report with PNG plots, per-round numbers by hand, partial runs, and multi-run comparison."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml

from evarl.eval.report import (
    build_report,
    comparison_table,
    differing_config,
    load_run,
    round_summary,
    write_round_markdown,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _w(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _eval(path: Path, mean: float, prompt_loose: float, rewards: list[float]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    h = {
        "mean_reward": mean,
        "reward_std": 0.1,
        "n": len(rewards),
        "failed": 0,
        "ifeval": {
            "prompt_strict": prompt_loose - 0.1,
            "prompt_loose": prompt_loose,
            "inst_strict": 0.5,
            "inst_loose": 0.6,
        },
        "mean_length": 40.0 + 10 * mean,
        "reward_length_pearson": 0.2,
    }
    (path / "eval.json").write_text(json.dumps({"heldout": h}))
    _w(
        path / "eval_generations.jsonl",
        [
            {"prompt_id": f"h{i}", "index": 0, "text": f"resp {i}", "reward": r, "failed": False}
            for i, r in enumerate(rewards)
        ],
    )


def make_run(root: Path, name: str, rounds: int = 2, metric: str = "a_min", gain: float = 0.1) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {"name": name, "rounds": rounds, "creator": {"metric": metric}, "solver": {"loss": "dpo"}}
        )
    )
    stages = {}
    _eval(run / "round-000", 0.5, 0.3, [0.4, 0.5, 0.6])
    for t in range(1, rounds + 1):
        rd = run / f"round-{t:03d}"
        ids = [f"r{t}p{i}" for i in range(4)]
        _w(
            rd / "prompts.jsonl",
            [{"id": i, "messages": [{"role": "user", "content": i}], "category": "writing"} for i in ids],
        )
        _w(
            rd / "generations.jsonl",
            [
                {"prompt_id": i, "index": j, "text": "x" * (j + 1), "num_tokens": j + 1}
                for i in ids
                for j in range(2)
            ],
        )
        _w(
            rd / "scores.jsonl",
            [{"prompt_id": i, "index": j, "reward": 0.5 * j, "failed": False} for i in ids for j in range(2)],
        )
        _w(
            rd / "info.jsonl",
            [{"prompt_id": i, "value": 0.1 * k, "rewards": [0, 0.5]} for k, i in enumerate(ids)],
        )
        _w(rd / "sampled.jsonl", [{"id": ids[0]}, {"id": ids[1]}])
        evolved = [
            {
                "id": f"e{t}a",
                "messages": [],
                "method": "constraint",
                "depth": 1,
                "task": f"evolved from {ids[0]}",
                "parent_id": ids[0],
                "category": "coding",
            },
            {
                "id": f"e{t}b",
                "messages": [],
                "method": "evolinstruct",
                "depth": 2,
                "parent_id": ids[1],
                "category": "maths",
            },
            {
                "id": f"e{t}c",
                "messages": [],
                "method": "constraint",
                "depth": 1,
                "parent_id": ids[1],
                "category": "coding",
            },
        ]
        _w(rd / "evolved.jsonl", evolved)
        _w(
            rd / "train_prompts.jsonl",
            evolved + [{"id": ids[2], "messages": [], "method": None, "category": "writing"}],
        )
        tg = [
            {"prompt_id": e["id"], "index": j, "text": "y", "num_tokens": 10 * (j + 1)}
            for e in evolved
            for j in range(3)
        ]
        _w(rd / "train_generations.jsonl", tg)
        # reward rises with length for every prompt: per-prompt Pearson r = 1
        _w(
            rd / "train_scores.jsonl",
            [
                {
                    "prompt_id": g["prompt_id"],
                    "index": g["index"],
                    "reward": 0.2 * g["index"],
                    "failed": False,
                }
                for g in tg
            ],
        )
        _w(
            rd / "pairs.jsonl",
            [
                {
                    "prompt_id": e["id"],
                    "chosen": "a",
                    "rejected": "b",
                    "chosen_reward": 0.4,
                    "rejected_reward": 0.1 * k,
                }
                for k, e in enumerate(evolved)
            ],
        )
        _w(
            rd / "train" / "train_log.jsonl",
            [
                {
                    "step": s,
                    "loss": 0.7 - 0.05 * s,
                    "reward_margin": 0.1 * s,
                    "reward_accuracy": 0.5 + 0.1 * s,
                    "chosen_logp": -10.0,
                    "rejected_logp": -11.0,
                    "lr": 1e-6,
                }
                for s in range(1, 4)
            ],
        )
        _w(
            rd / "prompt_scores.jsonl",
            [{"prompt_id": e["id"], "complexity": 2 + t, "quality": 3 + 0.5 * t} for e in evolved],
        )
        _eval(rd, 0.5 + gain * t, 0.3 + 0.1 * t, [0.5, 0.6 + 0.1 * t, 0.7])
        for st in ("generate", "score", "evolve", "train", "eval"):
            stages[f"round-{t:03d}/{st}"] = {"status": "done", "counts": {"items": 4}, "seconds": 1.5}
    (run / "manifest.json").write_text(json.dumps({"stages": stages}))
    return run


def test_round_summary_by_hand(tmp_path):
    run = load_run(make_run(tmp_path, "a"))
    s = round_summary(run.rounds[1])
    assert (s["prompts"], s["sampled"], s["evolved"], s["train_prompts"], s["pairs"]) == (4, 2, 3, 4, 3)
    assert s["evolved_share"] == pytest.approx(3 / 4)
    assert s["pair_margin_mean"] == pytest.approx((0.4 + 0.3 + 0.2) / 3)
    assert s["methods"] == {"constraint": 2, "evolinstruct": 1}
    assert s["mean_depth"] == pytest.approx(4 / 3)
    assert s["categories"] == {"coding": 2, "maths": 1, "writing": 1}
    assert s["info"]["mean"] == pytest.approx(0.15)
    assert s["train_reward_mean"] == pytest.approx(0.2)  # 0, 0.2, 0.4 per prompt
    assert s["reward_length_pearson_train"] == pytest.approx(1.0)
    assert s["complexity"] == 3 and s["quality"] == 3.5
    assert (s["train_steps"], s["loss_first"], s["loss_last"]) == (
        3,
        pytest.approx(0.65),
        pytest.approx(0.55),
    )


def test_write_round_markdown(tmp_path):
    run_dir = make_run(tmp_path, "a")
    p = write_round_markdown(run_dir, 2)
    assert p == run_dir / "round-002" / "report.md"
    md = p.read_text()
    assert "# a: round 2" in md
    assert "| generate | done | 1.500 | items=4 |" in md
    assert "evolved prompts kept: 3" in md and "constraint 2, evolinstruct 1" in md
    assert "pairs: 3" in md
    # held-out: base 0.500, previous round 0.600, this round 0.700, +0.200 vs base
    assert "| mean reward | 0.500 | 0.600 | 0.700 | +0.200 |" in md
    assert "| IFEval prompt loose (%) | 30.0 | 40.0 | 50.0 | +20.0 |" in md


def test_build_report_single_run(tmp_path):
    run_dir = make_run(tmp_path, "a")
    res = build_report([run_dir], tmp_path / "out")
    names = {p.name for p in res["plots"]}
    assert names == {
        f"a-{n}.png"
        for n in (
            "heldout",
            "heldout-rewards",
            "train-rewards",
            "informativeness",
            "prompt-scores",
            "curriculum",
            "evolve-methods",
            "training",
        )
    }
    for p in res["plots"]:
        assert p.read_bytes().startswith(PNG_MAGIC)
    page = res["html"].read_text()
    embedded = page.count('src="data:image/png;base64,')
    assert embedded == len(names)
    first = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(first).startswith(PNG_MAGIC)
    assert "<script" not in page and "http" not in page.split("<body>")[1]  # self-contained, nothing fetched
    md = res["markdown"].read_text()
    assert "![Held-out scores per round (round 0 = base policy)](plots/a-heldout.png)" in md
    assert "| 0 (base θ_0) | 0.500 |" in md and "| 2 | 0.700 |" in md
    assert "### Stage timings (seconds, from manifest.json)" in md
    assert "| 1 | constraint | 1 | r1p0 | evolved from r1p0 |" in md
    assert "| h0 | resp 0 | 0.400 | resp 0 | 0.500 |" in md  # base vs round 2 on the same prompt
    assert "```yaml\ncreator:\n  metric: a_min" in md
    assert "<details><summary>config.yaml</summary>" in page
    assert "| round-001 | 1.500 | 1.500 | 1.500 | 1.500 | 1.500 | 7.5 |" in md
    assert res["json"] == tmp_path / "out" / "report.json"
    data = json.loads(res["json"].read_text())
    assert data["runs"][0]["rounds"]["1"]["pairs"] == 3
    assert res["notes"] == []


def test_report_in_run_dir_keeps_the_runs_summary(tmp_path):
    """`evarl report RUN` writes into the run directory: the loop's own summary.json is left byte for byte."""
    run_dir = make_run(tmp_path, "a")
    own = b'{"rounds": 2, "written_by": "the loop"}\n'
    (run_dir / "summary.json").write_bytes(own)
    res = build_report([run_dir], run_dir)
    assert (run_dir / "summary.json").read_bytes() == own
    assert res["json"] == run_dir / "report.json"
    assert json.loads(res["json"].read_text())["runs"][0]["name"] == "a"


def test_partial_run_is_reported_with_notes(tmp_path):
    run_dir = make_run(tmp_path, "p", rounds=3)
    (run_dir / "round-003" / "eval.json").unlink()
    (run_dir / "round-002" / "train" / "train_log.jsonl").unlink()
    with (run_dir / "round-001" / "scores.jsonl").open("a") as f:
        f.write("{truncated\n")
    for name in ("pairs.jsonl", "train_scores.jsonl", "info.jsonl", "prompt_scores.jsonl"):
        (run_dir / "round-003" / name).unlink()
    (run_dir / "manifest.json").write_text("{not json")
    res = build_report([run_dir], tmp_path / "out")
    notes = " | ".join(res["notes"])
    assert "round(s) 3" in notes and "round-001/scores.jsonl:9: invalid JSON line skipped" in notes
    assert "manifest.json: unreadable" in notes
    assert res["html"].exists() and res["plots"]
    md = write_round_markdown(run_dir, 3).read_text()
    assert "pairs: —" in md and "| mean reward | 0.500 | 0.700 | — | — |" in md
    # a round the config plans but that has not started
    shutil.rmtree(run_dir / "round-003")
    res3 = build_report([run_dir], tmp_path / "out3")
    assert any("round(s) 3 of 3 not run yet" in n for n in res3["notes"])
    # a directory with nothing in it yet
    empty = tmp_path / "empty"
    empty.mkdir()
    res2 = build_report([empty], tmp_path / "out2")
    assert any("no round-NNN directories" in n for n in res2["notes"]) and res2["plots"] == []


def test_comparison_table_ablation_form(tmp_path):
    a = make_run(tmp_path, "dpo-eva", metric="a_min", gain=0.1)
    b = make_run(tmp_path, "dpo-uniform", metric="uniform", gain=0.05)
    runs = [load_run(a), load_run(b)]
    assert differing_config(runs) == ["creator.metric"]
    t = comparison_table(runs)
    assert t.headers[:3] == ["run", "round", "creator.metric"]
    assert [r[0] for r in t.rows] == ["θ_0: base (dpo-eva)", "dpo-eva", "dpo-uniform"]
    assert t.rows[1][2] == "a_min" and t.rows[1][3] == "0.700 (+0.200)"
    assert t.rows[2][2] == "uniform" and t.rows[2][3] == "0.600 (+0.100)"
    res = build_report([a, b], tmp_path / "cmp")
    assert (tmp_path / "cmp" / "plots" / "compare-heldout.png").exists()
    assert "creator.metric" in res["markdown"].read_text()


def test_malformed_values_do_not_crash(tmp_path):
    run_dir = make_run(tmp_path, "m", rounds=1)
    (run_dir / "manifest.json").write_text(json.dumps({"stages": ["not", "a", "mapping"]}))
    (run_dir / "round-001" / "eval.json").write_text(
        json.dumps({"heldout": {"mean_reward": "oops", "ifeval": 3}})
    )
    _w(run_dir / "round-001" / "info.jsonl", [{"value": "high"}, {"value": None}, {"prompt_id": "x"}])
    _w(run_dir / "round-001" / "train" / "train_log.jsonl", [{"step": "one", "loss": "nan?"}, {"loss": 0.5}])
    (run_dir / "config.yaml").write_text("rounds: [unclosed")
    res = build_report([run_dir], tmp_path / "out")
    assert res["html"].exists()
    assert any("config.yaml: unreadable" in n for n in res["notes"])
    md = write_round_markdown(run_dir, 1).read_text()
    assert "| mean reward | 0.500 | oops | — |" in md
