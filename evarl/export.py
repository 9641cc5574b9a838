"""`evarl export RUN_DIR`: a run's data out, in formats other tools read (docs/export.md).

    evarl export RUN_DIR [--what pairs|generations|scores|prompts] [--round N|all]
                 [--format jsonl|parquet|datasets] --out PATH

One table per call, the rows of every chosen round together, each with a ``round`` column:

* ``pairs`` (``round-00t/pairs.jsonl``): TRL's conversational preference format, ``prompt`` (messages),
  ``chosen`` / ``rejected`` (``[{"role": "assistant", "content": ...}]``), plus ``prompt_id``,
  ``chosen_reward``, ``rejected_reward``, ``margin`` and ``meta`` (pair rule, response indices, candidates, SPPO
  win probabilities). ``trl.DPOTrainer`` trains on it as it is. Pairs written by older evarl versions (plain
  strings) come out in the same format.
* ``generations`` (``generations.jsonl``, the creator step's responses to X_{t-1}, and ``train_generations.jsonl``,
  the solver step's responses to X_t): TRL's conversational prompt-completion format, ``prompt`` (messages) and
  ``completion`` (``[{"role": "assistant", ...}]``), plus ``stage`` (``creator`` | ``solver``), ``prompt_id``,
  ``index`` (response number), ``num_tokens``, ``finish_reason`` and the response's ``reward`` / ``failed``
  from the matching scores file (None when it was not scored).
* ``scores`` (``scores.jsonl`` / ``train_scores.jsonl``): ``stage``, ``prompt_id``, ``index``, ``reward`` (None
  when failed), ``failed``, ``components`` (per reward source).
* ``prompts`` (``train_prompts.jsonl``, the prompt set X_t the solver trained on): TRL's prompt-only format,
  ``prompt`` (messages), plus ``id``, ``task``, ``constraints``, ``category`` and the lineage ``parent_id``,
  ``method``, ``depth``, ``created_round`` (the round the prompt was evolved in; 0 = seed). evarl reads the
  file back as ``task.train_file``.

Formats: ``jsonl`` (one JSON object a line), ``parquet`` (one file), ``datasets`` (a ``datasets`` folder written
by ``save_to_disk``, read back with ``datasets.load_from_disk``). In Parquet / ``datasets`` a column whose values
do not share one Arrow type (free-form constraint arguments, for instance) is stored as JSON strings; the
command names such columns. ``--out`` must not exist or be empty: nothing is ever overwritten, and a failed
export leaves nothing behind (written to a temporary name, then renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evarl.io import DataError, iter_jsonl
from evarl.types import Pair

WHATS = ("pairs", "generations", "scores", "prompts")
FORMATS = ("jsonl", "parquet", "datasets")
# (stage, generations file, scores file, prompts file) of a round, in the order the loop runs them
STAGES = (
    ("creator", "generations.jsonl", "scores.jsonl", "prompts.jsonl"),
    ("solver", "train_generations.jsonl", "train_scores.jsonl", "train_prompts.jsonl"),
)
PROMPT_COLUMNS = ("id", "task", "constraints", "category", "parent_id", "method", "depth")


class ExportError(DataError):
    """A bad `evarl export` request: the message names the argument or path."""


# ---------------------------------------------------------------- the run directory


def run_rounds(run_dir: Path) -> dict[int, Path]:
    """The rounds of an offline run directory (round 1 on; round 0 holds only the base model's evaluation)."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise ExportError(f"{run_dir}: not an evarl run directory (no manifest.json)")
    out = {}
    for p in run_dir.iterdir():
        m = re.fullmatch(r"round-(\d+)", p.name)
        if m and p.is_dir() and int(m.group(1)) > 0:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def parse_round(value: str) -> int | None:
    """`--round`: a round number, or None for all."""
    if value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise ExportError(f"--round: expected a round number or 'all', got {value!r}") from None
    if n < 1:
        raise ExportError(f"--round: rounds are numbered from 1, got {n}")
    return n


def _rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    for i, row in iter_jsonl(path):
        yield f"{path}:{i}", row


def _pairs(rd: Path, t: int) -> list[dict[str, Any]]:
    out = []
    for where, row in _rows(rd / "pairs.jsonl"):
        try:
            pair = Pair.from_dict(row)
        except TypeError as e:
            raise DataError(f"{where}: not a preference pair ({e})") from e
        out.append({"round": t, **pair.to_dict()})
    return out


def _scores(rd: Path, t: int) -> list[dict[str, Any]]:
    out = []
    for stage, _, scores, _ in STAGES:
        if (rd / scores).exists():
            for _, row in _rows(rd / scores):
                out.append(
                    {
                        "round": t,
                        "stage": stage,
                        "prompt_id": row.get("prompt_id"),
                        "index": row.get("index"),
                        "reward": row.get("reward"),
                        "failed": bool(row.get("failed")),
                        "components": row.get("components") or {},
                    }
                )
    return out


def _generations(rd: Path, t: int) -> list[dict[str, Any]]:
    out = []
    for stage, gens, scores, prompts in STAGES:
        if not (rd / gens).exists():
            continue
        messages = {}
        if (rd / prompts).exists():
            messages = {str(r.get("id")): r.get("messages") for _, r in _rows(rd / prompts)}
        scored = {}
        if (rd / scores).exists():
            scored = {(r.get("prompt_id"), r.get("index")): r for _, r in _rows(rd / scores)}
        for where, row in _rows(rd / gens):
            if "text" not in row or "prompt_id" not in row:
                raise DataError(f"{where}: not a generation (needs 'prompt_id' and 'text')")
            s = scored.get((row["prompt_id"], row.get("index")))
            out.append(
                {
                    "round": t,
                    "stage": stage,
                    "prompt_id": row["prompt_id"],
                    "index": row.get("index"),
                    "prompt": messages.get(str(row["prompt_id"])),
                    "completion": [{"role": "assistant", "content": row["text"]}],
                    "num_tokens": row.get("num_tokens"),
                    "finish_reason": row.get("finish_reason"),
                    "reward": None if s is None else s.get("reward"),
                    "failed": None if s is None else bool(s.get("failed")),
                }
            )
    return out


def _prompts(rd: Path, t: int) -> list[dict[str, Any]]:
    out = []
    for where, row in _rows(rd / "train_prompts.jsonl"):
        if "messages" not in row:
            raise DataError(f"{where}: not an evarl prompt (no 'messages')")
        r = {"round": t, "prompt": row["messages"], **{k: row.get(k) for k in PROMPT_COLUMNS}}
        r["created_round"] = row.get("round", 0)
        r["meta"] = row.get("meta") or {}
        out.append(r)
    return out


READERS = {"pairs": _pairs, "generations": _generations, "scores": _scores, "prompts": _prompts}
# the file that must be in a round for it to have data of that kind
SOURCE_FILES = {
    "pairs": ("pairs.jsonl",),
    "generations": ("generations.jsonl", "train_generations.jsonl"),
    "scores": ("scores.jsonl", "train_scores.jsonl"),
    "prompts": ("train_prompts.jsonl",),
}


def collect(run_dir: Path, what: str, round_: int | None) -> list[dict[str, Any]]:
    """The rows of `what` from round `round_` (None = every round that has them), in round order."""
    if what not in READERS:
        raise ExportError(f"--what: unknown {what!r}; choose one of {', '.join(WHATS)}")
    rounds = run_rounds(run_dir)
    if round_ is not None:
        if round_ not in rounds:
            have = ", ".join(map(str, rounds)) or "none"
            raise ExportError(f"--round: {run_dir} has no round {round_} (rounds: {have})")
        rounds = {round_: rounds[round_]}
    has = {t: rd for t, rd in rounds.items() if any((rd / f).exists() for f in SOURCE_FILES[what])}
    if not has:
        where = f"round {round_}" if round_ is not None else "any round"
        raise ExportError(
            f"{run_dir}: no {what} in {where} (looked for {' / '.join(SOURCE_FILES[what])}; a round that has "
            "not reached that stage yet has none)"
        )
    return [row for t, rd in has.items() for row in READERS[what](rd, t)]


# ---------------------------------------------------------------- writing


def check_out(out: Path) -> None:
    """Refuse an --out that exists and is not empty (nothing is overwritten)."""
    if (out.is_dir() and any(out.iterdir())) or (out.is_file() and out.stat().st_size > 0):
        raise ExportError(
            f"--out {out}: already exists and is not empty; choose a new path (nothing was written)"
        )
    if out.exists() and not (out.is_dir() or out.is_file()):
        raise ExportError(f"--out {out}: exists and is not a file or folder")


def _empty_struct(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_empty_struct(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _empty_struct(t.value_type)
    return False


def to_arrow(rows: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    """An Arrow table of `rows` (columns in first-seen order) and the columns stored as JSON strings."""
    import pyarrow as pa

    columns = list(dict.fromkeys(k for r in rows for k in r))
    arrays, as_json = [], []
    for c in columns:
        values = [r.get(c) for r in rows]
        try:
            arr = pa.array(values)
            if _empty_struct(arr.type):  # Parquet cannot store a struct without fields (e.g. all {})
                raise ValueError(c)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, OverflowError):
            arr = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values],
                pa.string(),
            )
            as_json.append(c)
        arrays.append(arr)
    meta = {"evarl.json_columns": ",".join(as_json)} if as_json else None
    return pa.Table.from_arrays(arrays, names=columns, metadata=meta), as_json


def write_rows(rows: list[dict[str, Any]], fmt: str, out: Path) -> list[str]:
    """Write `rows` to `out` as `fmt`, atomically; returns the columns stored as JSON strings."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    check_out(out)
    if fmt != "datasets" and out.is_dir():
        raise ExportError(f"--out {out}: is a folder; --format {fmt} writes one file")
    out.parent.mkdir(parents=True, exist_ok=True)
    as_json: list[str] = []
    if fmt == "datasets":
        from datasets import Dataset
        from datasets.table import InMemoryTable

        table, as_json = to_arrow(rows)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            Dataset(InMemoryTable(table)).save_to_disk(str(tmp / "data"))
            if out.is_dir():
                out.rmdir()  # empty (checked above)
            os.replace(tmp / "data", out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return as_json
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        if fmt == "jsonl":
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            import pyarrow.parquet as pq

            os.close(fd)
            table, as_json = to_arrow(rows)
            pq.write_table(table, tmp_name)
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return as_json


def export_run(run_dir: Path, what: str, round_: int | None, fmt: str, out: Path) -> dict[str, Any]:
    """Export `what` of `run_dir` to `out`; returns {"rows", "rounds", "json_columns", "out"}."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: unknown {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_out(Path(out))  # before reading anything
    rows = collect(Path(run_dir), what, round_)
    if not rows:
        raise ExportError(f"{run_dir}: the {what} files of the chosen round(s) are empty; nothing to export")
    as_json = write_rows(rows, fmt, Path(out))
    return {
        "rows": len(rows),
        "rounds": sorted({r["round"] for r in rows}),
        "json_columns": as_json,
        "out": str(out),
    }


# ---------------------------------------------------------------- CLI


def add_subcommands(subparsers: Any) -> None:
    """Add `export` to the `evarl` parser (called by evarl.cli.build_parser)."""
    e = subparsers.add_parser(
        "export",
        help="a run's pairs / generations / scores / prompts as JSONL, Parquet or a datasets folder",
        description="\n\n".join((__doc__ or "").split("\n\n")[1:4]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run_dir", help="the run directory (runs/<name>)")
    e.add_argument("--what", default="pairs", help=f"{' | '.join(WHATS)} (default pairs)")
    e.add_argument("--round", default="all", help="a round number, or all (default)")
    e.add_argument("--format", default="jsonl", dest="fmt", help=f"{' | '.join(FORMATS)} (default jsonl)")
    e.add_argument(
        "--out", required=True, help="output file (jsonl, parquet) or folder (datasets); must be new"
    )
    e.set_defaults(fn=cmd_export)


def cmd_export(ns: argparse.Namespace) -> int:
    if ns.what not in WHATS:
        raise ExportError(f"--what: unknown {ns.what!r}; choose one of {', '.join(WHATS)}")
    res = export_run(Path(ns.run_dir), ns.what, parse_round(ns.round), ns.fmt, Path(ns.out))
    rounds = ", ".join(map(str, res["rounds"]))
    print(f"wrote {res['rows']} {ns.what} rows (round {rounds}) to {res['out']} ({ns.fmt})")
    if res["json_columns"]:
        print(f"note: column(s) {', '.join(res['json_columns'])} stored as JSON strings (mixed value types)")
    return 0
