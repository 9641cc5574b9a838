"""Prompt data through `datasets` (evarl.datasets_in): every source kind, written by the tests, read with a column
mapping into the same prompts; TRL prompt-only and conversational rows without a mapping; splits; the offline
hub-cache paths; and the plain-JSONL path that never imports `datasets`.

The cached-dataset-id cases build the caches the way they are made on a machine with network, minus the network:
- the `datasets` arrow cache: a packaged builder (`Json`) prepares the data as `load_dataset` would for a hub
  repo (`dataset_name` = the repo's name), and its output folder is placed at `<cache>/<namespace>___<name>/
  <config>/<version>/<hash>/`, the layout `DatasetBuilder._relative_data_dir` documents for a namespaced repo;
  `load_dataset(id)` with `HF_DATASETS_OFFLINE=1` reads exactly that (checked below in a subprocess);
- the hub download cache: `datasets--<ns>--<name>/refs/main` holding a commit hash and
  `snapshots/<hash>/...` holding the files, the layout huggingface_hub documents ("Understand caching").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evarl.datasets_in import HELDOUT_SPLITS, read_prompts, resolve
from evarl.io import DataError

ROWS = [
    {"question": "Name a colour.", "ids": ["punctuation:no_comma"], "kw": [{"num_words": None}], "qid": "a"},
    {"question": "Name a fruit.", "ids": [], "kw": [], "qid": "b"},
    {"question": "Name a tree.", "ids": ["detectable_format:title"], "kw": [{"num_words": None}], "qid": "c"},
]
COLUMNS = {"prompt": "question", "instruction_id_list": "ids", "kwargs": "kw", "id": "qid"}


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home: the tests never read or write the user's caches."""
    home = tmp_path / "hf"
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def _check(prompts: list) -> None:
    """The prompts every source of ROWS must give."""
    assert [p.id for p in prompts] == ["a", "b", "c"]
    assert [p.text for p in prompts] == [r["question"] for r in ROWS]
    assert [[c.id for c in p.constraints] for p in prompts] == [r["ids"] for r in ROWS]
    assert prompts[0].constraints[0].kwargs == {}  # null kwargs (a dataset's merged schema) are dropped


def _table():
    import pyarrow as pa

    return pa.Table.from_pylist(ROWS)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl(tmp_path: Path) -> None:
    _check(read_prompts(_jsonl(tmp_path / "p.jsonl", ROWS), columns=COLUMNS))


def test_json_array(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(ROWS, indent=1))
    _check(read_prompts(tmp_path / "p.json", columns=COLUMNS))


def test_parquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_table(), tmp_path / "p.parquet")
    _check(read_prompts(tmp_path / "p.parquet", columns=COLUMNS))


def test_arrow(tmp_path: Path) -> None:
    import pyarrow as pa

    table = _table()
    with pa.OSFile(str(tmp_path / "p.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    _check(read_prompts(tmp_path / "p.arrow", columns=COLUMNS))


def test_csv_text_prompts(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("qid,question\na,Name a colour.\nb,Name a fruit.\n")
    ps = read_prompts(tmp_path / "p.csv", columns={"prompt": "question", "id": "qid"})
    assert [(p.id, p.text) for p in ps] == [("a", "Name a colour."), ("b", "Name a fruit.")]


def test_folder_with_splits(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "data"
    d.mkdir()
    pq.write_table(_table(), d / "train.parquet")
    pq.write_table(pa.Table.from_pylist([dict(ROWS[1], qid="t")]), d / "test.parquet")
    _check(read_prompts(d, columns=COLUMNS))  # training prompts: "train"
    assert [p.id for p in read_prompts(d, columns=COLUMNS, prefer=HELDOUT_SPLITS)] == ["t"]
    assert [p.id for p in read_prompts(d, split="test", columns=COLUMNS)] == ["t"]
    with pytest.raises(DataError, match=r"no split 'dev' \(splits: "):
        read_prompts(d, split="dev", columns=COLUMNS)


def test_save_to_disk_dataset_and_dict(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "two"))
    assert resolve(tmp_path / "one").kind == "disk"
    _check(read_prompts(tmp_path / "one", columns=COLUMNS))
    _check(read_prompts(tmp_path / "two", columns=COLUMNS))
    assert [p.id for p in read_prompts(tmp_path / "two", split="test", columns=COLUMNS)] == ["b"]


def _cache_dataset_id(src: Path, repo_id: str, cache: Path) -> None:
    """Put `src` (JSONL) into the `datasets` cache as hub dataset `repo_id` (see the module docstring)."""
    from datasets.packaged_modules.json.json import Json

    ns, name = repo_id.split("/")
    staging = cache.parent / "staging"
    builder = Json(cache_dir=str(staging), dataset_name=name, data_files={"train": str(src)}, hash="0a1b2c3d")
    builder.download_and_prepare()
    built = Path(builder.cache_dir)  # <staging>/<name>/<config id>/<version>/<hash>
    target = cache / f"{ns}___{name}" / "default" / built.parts[-2] / built.parts[-1]
    target.parent.mkdir(parents=True)
    shutil.move(str(built), str(target))
    shutil.rmtree(staging)


def test_cached_dataset_id_offline(tmp_path: Path, hf_home: Path) -> None:
    src = _jsonl(tmp_path / "src.jsonl", ROWS)
    _cache_dataset_id(src, "evarl-test/tiny_prompts", hf_home / "datasets")
    assert resolve("evarl-test/tiny_prompts").kind == "hub"
    _check(read_prompts("evarl-test/tiny_prompts", columns=COLUMNS))
    # the same cache is what `datasets` itself reads offline
    code = "import datasets; print(datasets.load_dataset('evarl-test/tiny_prompts', split='train').num_rows)"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "3", out.stderr[-2000:]


def test_hub_snapshot_offline(tmp_path: Path, hf_home: Path) -> None:
    repo = hf_home / "hub" / "datasets--evarl-test--snap_prompts"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / "data"
    snap.mkdir(parents=True)
    _jsonl(snap / "train.jsonl", ROWS)
    _check(read_prompts("evarl-test/snap_prompts", columns=COLUMNS))


def test_dataset_id_not_cached_is_never_downloaded(hf_home: Path) -> None:
    with pytest.raises(DataError, match="not a dataset in the local Hugging Face caches.*never downloads"):
        read_prompts("evarl-test/not_there")
    assert not (hf_home / "hub").exists() or not any((hf_home / "hub").iterdir())


def test_trl_prompt_only_and_conversational_without_mapping(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Red."},
    ]
    pq.write_table(pa.Table.from_pylist([{"messages": chat}]), tmp_path / "conv.parquet")
    (p,) = read_prompts(tmp_path / "conv.parquet")
    assert p.messages == chat[:4]  # up to the last user turn; the answer is dropped
    pq.write_table(
        pa.Table.from_pylist([{"prompt": chat[:2]}, {"prompt": chat[3:4]}]), tmp_path / "po.parquet"
    )
    assert [q.text for q in read_prompts(tmp_path / "po.parquet")] == ["Hi", "Name a colour."]
    (tmp_path / "text.csv").write_text("prompt\nWrite a haiku.\n")
    assert read_prompts(tmp_path / "text.csv")[0].messages == [{"role": "user", "content": "Write a haiku."}]


def test_ifeval_rows_as_today(tmp_path: Path) -> None:
    rows = [{"key": 7, "prompt": "Write.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]
    (p,) = read_prompts(_jsonl(tmp_path / "ifeval.jsonl", rows))
    assert p.id == "7" and p.task == "Write." and p.constraints[0].id == "punctuation:no_comma"


def test_local_reads_write_no_data_to_the_cache(tmp_path: Path, hf_home: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_table(), tmp_path / "p.parquet")
    _check(read_prompts(tmp_path / "p.parquet", columns=COLUMNS))
    written = [p for p in hf_home.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert written == []


def test_plain_jsonl_never_imports_datasets(tmp_path: Path) -> None:
    # prompt-only rows: IFEval constraints would load the checkers, whose package (if-verifiable) imports datasets
    p = _jsonl(tmp_path / "p.jsonl", [{"q": r["question"], "qid": r["qid"]} for r in ROWS])
    code = (
        "import sys; from evarl.datasets_in import read_prompts; "
        f"ps = read_prompts({str(p)!r}, columns={{'prompt': 'q', 'id': 'qid'}}); "
        "print(len(ps), 'datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["3", "False"], out.stderr[-2000:]


def test_task_config_reads_the_mapping(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from evarl.config import load_config
    from evarl.loop import seed_prompts

    pq.write_table(_table(), tmp_path / "p.parquet")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        f"task:\n  name: file\n  train_file: {tmp_path / 'p.parquet'}\n  train_prompts: 2\n"
        "  columns: {prompt: question, instruction_id_list: ids, kwargs: kw, id: qid}\n"
    )
    cfg = load_config(cfg_path)
    train, held = seed_prompts(cfg)
    assert [p.id for p in train] == ["a", "b"] and held == []
