"""Prompt data in: any source Hugging Face `datasets` reads, with a column mapping, as evarl `Prompt`s.

A source (`task.train_file`, `task.heldout_file`, the prompts of `evarl eval`) is one of:

- a JSONL file (`.jsonl`) or a JSON file (`.json`: an array of objects, or JSON Lines): read line by line
  here, without `datasets` (fast, and errors name `file:line`);
- a Parquet, CSV or Arrow file, or a folder of such files (`datasets.load_dataset(path)`; its splits come from
  the file names, `train.parquet` / `test.parquet`, or a README's `configs`);
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`datasets.load_from_disk`);
- a hub dataset id (`HuggingFaceH4/ultrafeedback_binarized`) that is already in the local cache: the `datasets`
  cache a `load_dataset` call left (`$HF_DATASETS_CACHE`, default `$HF_HOME/datasets`), read by the same
  `Cache` builder `load_dataset` uses with `HF_DATASETS_OFFLINE=1`, or else a hub snapshot
  (`huggingface-cli download --repo-type dataset ...`, `$HF_HUB_CACHE`) read as a folder. Nothing is ever
  downloaded: a dataset that is in neither cache is an error saying how to fetch it.

Non-JSON sources are streamed (`streaming=True`) or memory-mapped: reading them writes no data to the cache
(`datasets` leaves only its lock files there).

Rows become prompts by `evarl.data_io.prompt_from_row` (TRL prompt-only, TRL conversational `messages`, IFEval,
AlpacaEval, evarl records). `columns` renames dataset columns to the fields it reads, e.g.
`{"prompt": "question", "instruction_id_list": "ids", "kwargs": "kw"}`; unmapped columns pass through. A split is
chosen by `split`, or else: the only split, or the first of `prefer` present (`train` for training prompts,
`test` then `validation` for held-out prompts). `subset` names a dataset configuration (hub ids and folders
with configs).

Every problem is a `DataError` naming the source, the row (`file:line` or `source:row N`), the field and, when it
was mapped, the column.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evarl.data_io import prompt_from_row
from evarl.io import DataError, iter_json_rows, iter_jsonl
from evarl.types import Prompt

# the row fields `prompt_from_row` reads, i.e. the keys `columns` may map
FIELDS = (
    "prompt",
    "messages",
    "instruction",
    "id",
    "key",
    "instruction_id_list",
    "kwargs",
    "constraints",
    "category",
    "task",
)
PROMPT_FIELDS = ("prompt", "messages", "instruction")  # a row needs one of these
# file suffix -> `datasets` packaged builder
DATASET_FILES = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
TRAIN_SPLITS = ("train",)
HELDOUT_SPLITS = ("test", "validation")
BATCH_ROWS = 1024  # rows per Arrow batch read from a `datasets` source
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class Source:
    """A resolved prompt source: as the user wrote it, its kind (jsonl, json, file, folder, disk, hub), the path
    or id to load and, for a single data file, the `datasets` builder that reads it."""

    spec: str
    kind: str
    path: str
    builder: str | None = None


def datasets_cache() -> Path:
    """The `datasets` cache folder as the environment says now ($HF_DATASETS_CACHE, $HF_HOME/datasets, ...)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "datasets"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "datasets"


def hub_cache() -> Path:
    """The hub download cache as the environment says now ($HF_HUB_CACHE, $HF_HOME/hub, ...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def resolve(spec: str | Path) -> Source:
    """What kind of source `spec` is. A path that does not exist and does not look like a hub id is an error."""
    s = str(spec)
    p = Path(s).expanduser()
    if p.is_file():
        if p.suffix == ".jsonl":
            return Source(s, "jsonl", str(p))
        if p.suffix == ".json":
            return Source(s, "json", str(p))
        if p.suffix in DATASET_FILES:
            return Source(s, "file", str(p), DATASET_FILES[p.suffix])
        known = ", ".join([".jsonl", ".json", *DATASET_FILES])
        raise DataError(
            f"{s}: unsupported file type {p.suffix or '(none)'!r}; supported: {known}, or a folder"
        )
    if p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return Source(s, "disk", str(p))
        return Source(s, "folder", str(p))
    if _HUB_ID.match(s) and Path(s).suffix not in (".jsonl", ".json", *DATASET_FILES):
        return Source(s, "hub", s)
    raise DataError(f"{s}: file or folder does not exist")


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """`datasets` without progress bars and logs for the duration (restored afterwards)."""
    import datasets
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    bars_off = datasets.utils.are_progress_bars_disabled()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # evarl reports a failure itself, in one line
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        ds_logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def _cached_hub_dataset(src: Source, subset: str | None) -> Any:
    """A hub dataset id from the local caches only: the `datasets` arrow cache, else a hub snapshot folder."""
    from datasets.packaged_modules.cache.cache import Cache

    cache = datasets_cache()
    try:
        builder = Cache(
            cache_dir=str(cache),
            repo_id=src.path,
            dataset_name=src.path.split("/")[-1],
            config_name=subset,
            version="auto",
            hash="auto",
        )
        return builder.as_dataset()
    except ValueError as e:
        if "multiple" in str(e):  # several configurations cached: the user must say which
            raise DataError(f"{src.spec}: {str(e).splitlines()[0]}; choose one with task.subset") from None
        arrow_problem = str(e).splitlines()[0]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id=src.path, repo_type="dataset", local_files_only=True, cache_dir=str(hub_cache())
        )
    except LocalEntryNotFoundError:
        raise DataError(
            f"{src.spec}: not a file or folder, and not a dataset in the local Hugging Face caches "
            f"({arrow_problem} in {cache}; no snapshot in {hub_cache()}); evarl never downloads data: fetch it "
            f"once with `huggingface-cli download --repo-type dataset {src.path}` or "
            f"`python -c \"import datasets; datasets.load_dataset('{src.path}')\"`"
        ) from None
    import datasets

    return datasets.load_dataset(folder, name=subset, streaming=True, cache_dir=str(cache))


def _load(src: Source, subset: str | None) -> Any:
    """A `datasets` (Iterable)DatasetDict or (Iterable)Dataset for the non-JSON kinds."""
    cache = str(datasets_cache())  # as the environment says now (`datasets.config` froze it at import)
    with _quiet_datasets() as datasets:
        if src.kind == "disk":
            if subset:
                raise DataError(f"{src.spec}: a save_to_disk folder has no configurations (task.subset)")
            return datasets.load_from_disk(src.path)
        if src.kind == "file":
            if subset:
                raise DataError(f"{src.spec}: a single file has no configurations (task.subset)")
            return datasets.load_dataset(src.builder, data_files=src.path, streaming=True, cache_dir=cache)
        if src.kind == "folder":
            return datasets.load_dataset(src.path, name=subset, streaming=True, cache_dir=cache)
        return _cached_hub_dataset(src, subset)


def _pick_split(src: Source, data: Any, split: str | None, prefer: tuple[str, ...]) -> tuple[Any, str]:
    """The split to read and a label for messages (`source[split]` when the choice among several matters)."""
    splits = list(data.keys()) if hasattr(data, "keys") else []
    if not splits:  # a single Dataset (save_to_disk of one split)
        if split:
            raise DataError(f"{src.spec}: has no splits; drop the split setting (asked for {split!r})")
        return data, src.spec
    if split:
        if split not in splits:
            raise DataError(f"{src.spec}: no split {split!r} (splits: {', '.join(splits)})")
        return data[split], f"{src.spec}[{split}]"
    if len(splits) == 1:
        return data[splits[0]], src.spec
    for name in prefer:
        if name in splits:
            return data[name], f"{src.spec}[{name}]"
    raise DataError(f"{src.spec}: several splits ({', '.join(splits)}); choose one with task.split")


def _unreadable(src: Source, e: Exception) -> DataError:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return DataError(f"{src.spec}: cannot read it as a dataset ({type(e).__name__}: {first})")


def open_rows(
    spec: str | Path,
    split: str | None = None,
    subset: str | None = None,
    prefer: tuple[str, ...] = TRAIN_SPLITS,
) -> tuple[list[str] | None, Iterator[tuple[str, dict[str, Any]]]]:
    """(column names when the source declares them, else None; an iterator of (where, row)). `where` is
    `file:line` for JSON files and `source:row N` (`source[split]:row N`) for the rest."""
    src = resolve(spec)
    if src.kind in ("jsonl", "json"):
        if split or subset:
            raise DataError(
                f"{src.spec}: a JSON file has no splits or configurations (task.split, task.subset)"
            )
        rows = iter_jsonl(src.path) if src.kind == "jsonl" else iter_json_rows(src.path)
        return None, ((f"{src.spec}:{i}", row) for i, row in rows)
    try:
        ds, label = _pick_split(src, _load(src, subset), split, prefer)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever `datasets` / pyarrow raise for an unreadable source
        raise _unreadable(src, e) from None

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            with _quiet_datasets():
                i = 0
                # Arrow batches, not rows: per-row Python formatting is ~50x slower on a large dataset
                for table in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
                    for row in table.to_pylist():
                        i += 1
                        yield f"{label}:row {i}", row
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged file shows up while streaming
            raise _unreadable(src, e) from None

    names = getattr(ds, "column_names", None)
    it = rows()
    if names:
        return list(names), it
    # a stream that does not declare its columns (CSV): its first row names them
    first = next(it, None)
    if first is None:
        return None, iter(())
    return list(first[1]), itertools.chain([first], it)


def check_columns(columns: Mapping[str, Any]) -> list[str]:
    """Problems with a column mapping itself: unknown fields, values that are not column names."""
    out = []
    for f, col in columns.items():
        if f not in FIELDS:
            out.append(f"task.columns.{f}: unknown field; known: {', '.join(FIELDS)}")
        elif not isinstance(col, str) or not col:
            out.append(f"task.columns.{f}: expected a column name, got {col!r}")
    return out


def _check_declared(spec: str | Path, names: list[str], columns: Mapping[str, str]) -> None:
    """Mapped columns present, and some column holding the prompt, before any row is read."""
    for f, col in columns.items():
        if col not in names:
            raise DataError(
                f"{spec}: no column {col!r} (mapped by task.columns.{f}); columns: {', '.join(names)}"
            )
    fields = set(names) - set(columns.values()) | set(columns)
    if not fields & set(PROMPT_FIELDS):
        raise DataError(
            f"{spec}: no column 'prompt', 'messages' or 'instruction' (columns: {', '.join(names)}); "
            "map one with task.columns.prompt=<column>"
        )


def _mapped(row: dict[str, Any], where: str, columns: Mapping[str, str]) -> dict[str, Any]:
    """The row with mapped columns renamed to evarl's fields (unmapped columns pass through)."""
    if not columns:
        return row
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for f, col in columns.items():
        if col not in row:
            raise DataError(
                f"{where}: no column {col!r} (mapped by task.columns.{f}); columns: {', '.join(map(str, row))}"
            )
        out[f] = row[col]
    return out


_FIELD_IN_MESSAGE = re.compile(r"field '(\w+)")


def read_prompts(
    spec: str | Path,
    split: str | None = None,
    subset: str | None = None,
    columns: Mapping[str, str] | None = None,
    prefer: tuple[str, ...] = TRAIN_SPLITS,
) -> list[Prompt]:
    """Every row of a source as a `Prompt` (ids unique; a source without rows is an error)."""
    columns = dict(columns or {})
    problems = check_columns(columns)
    if problems:
        raise DataError(problems[0])
    out: list[Prompt] = []
    seen: dict[str, str] = {}
    names, rows = open_rows(spec, split, subset, prefer)
    if names is not None:
        _check_declared(spec, names, columns)
    for k, (where, raw) in enumerate(rows):
        row = _mapped(raw, where, columns)
        try:
            pr = prompt_from_row(row, where, k)
        except DataError as e:
            m = _FIELD_IN_MESSAGE.search(str(e))
            if m and m.group(1) in columns:
                raise DataError(
                    f"{e} (column {columns[m.group(1)]!r}, mapped by task.columns.{m.group(1)})"
                ) from None
            raise
        if pr.id in seen:
            raise DataError(f"{where}: field 'id': duplicate id {pr.id!r} (first at {seen[pr.id]})")
        seen[pr.id] = where
        out.append(pr)
    if not out:
        raise DataError(f"{spec}: no prompts")
    return out


__all__ = [
    "DATASET_FILES",
    "FIELDS",
    "HELDOUT_SPLITS",
    "PROMPT_FIELDS",
    "TRAIN_SPLITS",
    "Source",
    "check_columns",
    "datasets_cache",
    "hub_cache",
    "open_rows",
    "read_prompts",
    "resolve",
]
