"""evarl.io: the record readers and writers, atomic and rank-0-only writes, `replace_dir`, the one template loader,
and the layering rules (io imports nothing above it; no other module defines its own record reader/writer or
template loader)."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from evarl.io import (
    PROMPTS_DIR,
    DataError,
    TemplateError,
    fill_template,
    iter_json_rows,
    iter_jsonl,
    load_template,
    read_json,
    read_jsonl,
    read_records,
    replace_dir,
    shipped_templates,
    write_json,
    write_jsonl,
    write_text,
)

ROOT = Path(__file__).resolve().parents[2] / "evarl"


@dataclass
class Row:
    a: int
    b: str = ""

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b}


def test_iter_jsonl_numbers_lines_and_skips_blanks(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (3, {"a": 2})]
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}\n{oops\n', r"r\.jsonl:2: not valid JSON"),
        ('{"a": 1}\n[1, 2]\n', r"r\.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_iter_jsonl_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_jsonl(p)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    for reader in (read_jsonl, read_json, lambda p: list(iter_json_rows(p))):
        with pytest.raises(DataError, match="nope.jsonl: file does not exist"):
            reader(tmp_path / "nope.jsonl")


def test_json_rows_from_array_or_lines(tmp_path: Path) -> None:
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"x": 1}, {"x": 2}], indent=2))
    assert list(iter_json_rows(arr)) == [(1, {"x": 1}), (2, {"x": 2})]
    lines = tmp_path / "l.json"
    lines.write_text('{"x": 1}\n{"x": 2}\n')
    assert [r for _, r in iter_json_rows(lines)] == [{"x": 1}, {"x": 2}]
    arr.write_text(json.dumps([{"x": 1}, 3]))
    with pytest.raises(DataError, match=r"a\.json:entry 2: expected a JSON object, got int"):
        list(iter_json_rows(arr))


def test_read_json_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(DataError, match=r"m\.json:3: not valid JSON"):
        read_json(p)


def test_read_records_into_dataclasses(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "rows.jsonl", [Row(1, "x"), {"a": 2}])
    assert read_records(p, Row) == [Row(1, "x"), Row(2, "")]
    p.write_text('{"a": 1}\n{"c": 3}\n')
    with pytest.raises(DataError, match=r"rows\.jsonl:2: does not match Row"):
        read_records(p, Row)


def test_writers_are_atomic_and_keep_the_old_file_on_error(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    write_jsonl(p, [{"a": 1}])

    def killed():
        yield {"a": 2}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(p, killed())
    assert p.read_text() == '{"a": 1}\n'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left behind


def test_sort_keys_makes_bytes_independent_of_key_order(tmp_path: Path) -> None:
    assert write_jsonl(tmp_path / "u.jsonl", [{"b": 1, "a": 2}]).read_text() == '{"b": 1, "a": 2}\n'
    assert (
        write_jsonl(tmp_path / "s.jsonl", [{"b": 1, "a": 2}], sort_keys=True).read_text()
        == '{"a": 2, "b": 1}\n'
    )
    text = write_json(tmp_path / "o.json", {"b": 1, "a": [1, 2]}, sort_keys=True).read_text()
    assert text == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert read_json(write_json(tmp_path / "p.json", {"path": Path("x")})) == {"path": "x"}  # default=str


def test_only_rank_zero_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    write_jsonl(tmp_path / "a.jsonl", [{"a": 1}])
    write_json(tmp_path / "b.json", {})
    write_text(tmp_path / "c.txt", "x")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    assert write_text(tmp_path / "c.txt", "x").read_text() == "x"


def test_replace_dir_swaps_whole_directories(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with replace_dir(target) as d:
        (d / "w.bin").write_text("1")
    with pytest.raises(RuntimeError), replace_dir(target) as d:
        (d / "w.bin").write_text("half")
        raise RuntimeError("killed")
    assert (target / "w.bin").read_text() == "1"
    with replace_dir(target) as d:
        (d / "v.bin").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["v.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("folder", "name", "slots"),
    [
        ("eval", "pairwise", ("instruction", "output_a", "output_b")),
        ("judge", "additive_5point", ("instruction", "response")),
        ("pairwise", "rlhflow", ()),
        ("evolve", "in_depth", ("prompt", "method")),
        ("scoring", "complexity", ()),
    ],
)
def test_one_loader_for_every_shipped_template(folder: str, name: str, slots: tuple[str, ...]) -> None:
    text = load_template(name, folder, slots)
    assert text == (PROMPTS_DIR / folder / f"{name}.txt").read_text(encoding="utf-8").rstrip()
    assert name in shipped_templates(folder)


def test_template_from_a_file_and_its_errors(tmp_path: Path) -> None:
    t = tmp_path / "mine.txt"
    t.write_text("Judge {instruction} -> {response}\n\n")
    assert load_template(str(t), "judge", ("instruction", "response")) == "Judge {instruction} -> {response}"
    t.write_text("only {instruction}")
    with pytest.raises(TemplateError, match=r"mine\.txt: template lacks the slot\(s\) \{response\}"):
        load_template(t, "judge", ("instruction", "response"))
    with pytest.raises(DataError, match=r"nope: no such template file.*shipped: additive_5point"):
        load_template("nope", "judge")
    assert fill_template("{a}-{b}-{c}", a="{b}", b="x") == "{b}-x-{c}"  # one pass, unknown slots kept


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_io_sits_at_the_bottom() -> None:
    allowed = {"evarl.types", "evarl.dist", "yaml", "__future__"}
    for mod in _imports(ROOT / "io.py"):
        top = mod.split(".")[0]
        assert mod in allowed or (top != "evarl" and top in __import__("sys").stdlib_module_names), mod


def test_one_name_one_meaning() -> None:
    """The record readers/writers and the template loader are defined in evarl/io.py and nowhere else."""
    names = {
        "iter_jsonl",
        "read_jsonl",
        "write_jsonl",
        "read_json",
        "write_json",
        "write_text",
        "read_records",
        "replace_dir",
        "load_template",
    }
    clashes = []
    for path in ROOT.rglob("*.py"):
        if path == ROOT / "io.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in names:
                clashes.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.name}")
    assert clashes == []
