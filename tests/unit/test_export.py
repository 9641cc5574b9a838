"""Data out: pairs.jsonl in TRL's conversational preference format (old plain-string rows still read), and
`evarl export` of pairs / generations / scores / prompts as JSONL, Parquet and `datasets` folders, on a run
directory written with evarl's own writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.cli import main
from evarl.export import collect, export_run, to_arrow
from evarl.io import read_records, write_json, write_jsonl
from evarl.types import Completion, Constraint, Pair, Prompt, Scored


def _prompt(pid: str, rnd: int = 0, **kw) -> Prompt:
    return Prompt(id=pid, messages=[{"role": "user", "content": f"question {pid}"}], round=rnd, **kw)


def make_run(root: Path, rounds: int = 2) -> Path:
    """A finished-looking offline run directory: manifest, per round prompts, generations, scores, pairs."""
    run = root / "run"
    write_json(run / "manifest.json", {"format": "evarl-run/1", "stages": {}})
    for t in range(1, rounds + 1):
        rd = run / f"round-{t:03d}"
        prompts = [
            _prompt(f"a{t}", constraints=[Constraint("length_constraints:number_words", {"num_words": 5})]),
            _prompt(f"b{t}", rnd=t, parent_id=f"a{t}", method="evolinstruct", depth=1, meta={"note": "x"}),
        ]
        write_jsonl(rd / "prompts.jsonl", prompts[:1])
        write_jsonl(rd / "train_prompts.jsonl", prompts)
        gens = [Completion(p.id, i, f"answer {i} to {p.id}", 3 + i) for p in prompts for i in range(2)]
        write_jsonl(rd / "generations.jsonl", gens[:2])
        write_jsonl(rd / "scores.jsonl", [Scored(c.prompt_id, c.index, 0.5) for c in gens[:2]])
        write_jsonl(rd / "train_generations.jsonl", gens)
        scores = [Scored(c.prompt_id, c.index, float(c.index), components={"verifier": 1.0}) for c in gens]
        scores[-1] = Scored(gens[-1].prompt_id, gens[-1].index, None, failed=True)
        write_jsonl(rd / "train_scores.jsonl", scores)
        pairs = [
            Pair(
                p.id,
                p.messages,
                f"good {p.id}",
                f"bad {p.id}",
                1.0,
                0.0,
                {"rule": "best_worst", "chosen_index": 1},
            )
            for p in prompts
        ]
        write_jsonl(rd / "pairs.jsonl", pairs)
    return run


# ---------------------------------------------------------------- the pairs.jsonl format


def test_pair_rows_are_trl_conversational_with_evarl_fields(tmp_path: Path) -> None:
    pair = Pair("p1", [{"role": "user", "content": "q"}], "yes", "no", 0.9, 0.2, {"rule": "best_worst"})
    write_jsonl(tmp_path / "pairs.jsonl", [pair])
    row = json.loads((tmp_path / "pairs.jsonl").read_text())
    assert row["prompt"] == [{"role": "user", "content": "q"}]
    assert row["chosen"] == [{"role": "assistant", "content": "yes"}]
    assert row["rejected"] == [{"role": "assistant", "content": "no"}]
    assert (row["prompt_id"], row["chosen_reward"], row["rejected_reward"]) == ("p1", 0.9, 0.2)
    assert row["margin"] == pytest.approx(0.7) and row["meta"] == {"rule": "best_worst"}
    back = read_records(tmp_path / "pairs.jsonl", Pair)
    assert back == [pair]


def test_old_plain_string_pairs_still_read(tmp_path: Path) -> None:
    old = {"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b",
           "chosen_reward": 1.0, "rejected_reward": 0.0, "meta": {}}  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text(json.dumps(old) + "\n")
    (p,) = read_records(tmp_path / "pairs.jsonl", Pair)
    assert (p.chosen, p.rejected, p.margin) == ("a", "b", 1.0)


def test_a_pair_side_that_is_not_an_assistant_turn_names_the_line(tmp_path: Path) -> None:
    from evarl.io import DataError

    bad = {"prompt_id": "p", "prompt": [], "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}
    (tmp_path / "pairs.jsonl").write_text("\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:2: .*'chosen'.*assistant"):
        read_records(tmp_path / "pairs.jsonl", Pair)


# ---------------------------------------------------------------- export


def test_collect_pairs_all_rounds_and_one_round(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    rows = collect(run, "pairs", None)
    assert [(r["round"], r["prompt_id"]) for r in rows] == [(1, "a1"), (1, "b1"), (2, "a2"), (2, "b2")]
    assert [r["round"] for r in collect(run, "pairs", 2)] == [2, 2]


def test_generations_join_prompt_and_score(tmp_path: Path) -> None:
    rows = collect(make_run(tmp_path, rounds=1), "generations", None)
    creator = [r for r in rows if r["stage"] == "creator"]
    solver = [r for r in rows if r["stage"] == "solver"]
    assert len(creator) == 2 and len(solver) == 4
    first = solver[1]
    assert first["prompt"] == [{"role": "user", "content": "question a1"}]
    assert first["completion"] == [{"role": "assistant", "content": "answer 1 to a1"}]
    assert (first["index"], first["num_tokens"], first["reward"], first["failed"]) == (1, 4, 1.0, False)
    assert (solver[-1]["reward"], solver[-1]["failed"]) == (None, True)
    assert creator[0]["reward"] == 0.5


def test_scores_and_prompts_columns(tmp_path: Path) -> None:
    run = make_run(tmp_path, rounds=1)
    scores = collect(run, "scores", 1)
    assert set(scores[0]) == {"round", "stage", "prompt_id", "index", "reward", "failed", "components"}
    assert [s["stage"] for s in scores].count("solver") == 4
    prompts = collect(run, "prompts", 1)
    assert [p["id"] for p in prompts] == ["a1", "b1"]
    assert prompts[1]["prompt"][0]["role"] == "user" and prompts[1]["created_round"] == 1
    assert (prompts[1]["parent_id"], prompts[1]["method"], prompts[1]["depth"]) == ("a1", "evolinstruct", 1)


def test_exported_prompts_read_back_as_a_train_file(tmp_path: Path) -> None:
    from evarl.data_io import prompt_from_row
    from evarl.io import iter_jsonl

    out = tmp_path / "prompts.jsonl"
    export_run(make_run(tmp_path, rounds=1), "prompts", 1, "jsonl", out)
    back = [prompt_from_row(row, f"{out}:{i}", i) for i, row in iter_jsonl(out)]
    assert [(p.id, p.messages) for p in back] == [("a1", [{"role": "user", "content": "question a1"}]),
                                                  ("b1", [{"role": "user", "content": "question b1"}])]  # fmt: skip


@pytest.mark.parametrize("what", ["pairs", "generations", "scores", "prompts"])
def test_parquet_and_datasets_hold_the_same_rows_as_jsonl(tmp_path: Path, what: str) -> None:
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    run = make_run(tmp_path)
    res = {
        fmt: export_run(run, what, None, fmt, tmp_path / f"out.{fmt}")
        for fmt in ("jsonl", "parquet", "datasets")
    }
    assert len({r["rows"] for r in res.values()}) == 1
    jl = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    pq_rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    ds = load_from_disk(str(tmp_path / "out.datasets"))
    assert len(jl) == len(pq_rows) == len(ds) == res["jsonl"]["rows"]
    assert list(pq_rows[0]) == list(jl[0]) == ds.column_names
    json_cols = set(res["parquet"]["json_columns"])
    for a, b in zip(jl, pq_rows):
        for k, v in a.items():
            got = json.loads(b[k]) if k in json_cols and b[k] is not None else b[k]
            if isinstance(v, dict) and k not in json_cols:  # structs carry every key seen in the column
                got = {kk: vv for kk, vv in got.items() if kk in v}
            assert got == v, (k, got, v)
    assert ds[0]["round"] == jl[0]["round"]


def test_datasets_pairs_keep_messages_and_meta(tmp_path: Path) -> None:
    from datasets import load_from_disk

    export_run(make_run(tmp_path), "pairs", 1, "datasets", tmp_path / "ds")
    ds = load_from_disk(str(tmp_path / "ds"))
    assert ds[0]["prompt"] == [{"role": "user", "content": "question a1"}]  # (DPOTrainer: tests/integration)
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "good a1"}]
    assert ds[0]["meta"]["rule"] == "best_worst"


def test_mixed_type_column_is_stored_as_json_strings() -> None:
    table, as_json = to_arrow([{"a": 1, "k": {"x": 1}}, {"a": 2, "k": {"x": "one"}}, {"a": 3, "k": {}}])
    assert as_json == ["k"]
    assert table.column("k").to_pylist() == ['{"x": 1}', '{"x": "one"}', "{}"]
    assert table.schema.metadata[b"evarl.json_columns"] == b"k"
    _, as_json = to_arrow([{"e": {}}, {"e": {}}])  # Parquet cannot store a struct without fields
    assert as_json == ["e"]


def test_cli_export_prints_rows_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "sub" / "pairs.parquet"
    assert main(["export", str(run), "--round", "2", "--format", "parquet", "--out", str(out)]) == 0
    assert "wrote 2 pairs rows (round 2)" in capsys.readouterr().out
    assert out.is_file() and not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_empty_out_folder_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = export_run(make_run(tmp_path), "scores", None, "datasets", tmp_path / "empty")
    assert res["rows"] == 12 and (tmp_path / "empty" / "dataset_info.json").exists()
