"""Run directory, manifest, resume and the integrity rules that keep a run from losing or mixing up work.

Each stage is a function from files to files. The manifest records, per stage, its status, counts, timings and
a digest of each of its outputs. `evarl run` on an existing run directory skips every finished stage and resumes
the first unfinished one; chunked stages (generation) also keep a `.partial.jsonl` so a stage killed halfway
continues from its last finished chunk. All writes are atomic (temp file + rename), so a SIGKILL never leaves a
half-written artifact that looks finished.

Integrity rules (checked by `Run.open` before anything is written):

- A finished stage counts as finished only while its outputs are there with the recorded digests. A missing
  output sends that stage and every later stage (manifest order = the order they ran) back to "redo"; an
  output that exists with another digest stops the run (`RunChangedError`, naming the file), nothing changed.
  When a stage sent back to "redo" starts again, the outputs it recorded are deleted first, so it cannot
  reuse them (the trainer would otherwise skip a finished `train/model` built from the old pairs).
- Digests: files up to `FULL_HASH_MAX_BYTES` are hashed whole; larger files by their size and
  `SAMPLE_BLOCKS` blocks spread over the file (cheap for multi-GB weights, unchanged by a copy, unlike an
  mtime); a directory (a saved model) by the sorted list of its files' digests.
- One process at a time: rank 0 holds an `fcntl.flock` on `<run>/.evarl.lock` for the rest of its life; a
  second `evarl run` on the directory fails at once (`RunLockedError`). The kernel drops the lock when the
  holder dies, so a SIGKILLed run never leaves a stale lock.
- Only evarl's own directories are adopted: a manifest marked `"format": "evarl-run/1"` (or an older one with
  `stages` and `config_fingerprint`). Any other non-empty directory is refused (`NotARunError`) untouched.
- The config fingerprint ignores the resumable fields (`rounds`, `threads`) and where the run lives (`name`,
  `output_dir`), and normalizes local paths (`./data/x.jsonl`, `data/x.jsonl` and its absolute spelling are one
  value; a hub id stays as written). A refused rerun names the fields that differ.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from evarl.config import ConfigError, RunConfig, config_to_dict
from evarl.io import write_json, write_text
from evarl.truncation import take_truncated

MANIFEST_FORMAT = "evarl-run/1"
LOCK_NAME = ".evarl.lock"
# Fields that may change between invocations of the same run without invalidating finished stages.
# (tracking: where the numbers are logged, not what is computed)
RESUMABLE_FIELDS = {"rounds", "threads", "tracking"}
# Where the run lives: fixed by the directory itself, so moving or renaming a run does not refuse it.
LOCATION_FIELDS = {"name", "output_dir"}
# Config values that name local files or model folders (a hub id or keyword in these stays as written).
PATH_FIELDS = (
    "model.path",
    "model.chat_template",
    "task.train_file",
    "task.heldout_file",
    "creator.model",
    "solver.teacher",
    "solver.sft_data[]",  # a list of paths
    "solver.eft_data[]",
    "reward.sources[].model",  # a field of every item of a list
)
PATH_KEYWORDS = {"embedded", "policy", "endpoint"}
FULL_HASH_MAX_BYTES = 32 * 2**20  # files up to 32 MiB are hashed whole
SAMPLE_BLOCKS = 16  # larger files: size + 16 blocks of 64 KiB spread evenly (first and last included)
SAMPLE_BYTES = 64 * 2**10


class RunExistsError(RuntimeError):
    """The run directory cannot be used as asked (another config, not a run, in use, changed outputs)."""


class NotARunError(RunExistsError):
    """A directory that is not an evarl run (and not empty) where a run or a report would be written."""


class RunLockedError(RunExistsError):
    """Another live process holds the run directory's lock."""


class RunChangedError(RunExistsError):
    """An output of a finished stage exists with a digest other than the recorded one."""


# ---------------------------------------------------------------- config fingerprint


def normalize_path_value(value: Any) -> Any:
    """The spelling-free form of a path-valued config field: local paths (spelled ./ / ~, or existing here)
    become absolute and normalized; hub ids and keywords (`embedded`, `policy`, `endpoint`) stay as written,
    which is also how `evarl.models.loading.resolve_model_path` tells them apart."""
    if not isinstance(value, str) or not value or value in PATH_KEYWORDS:
        return value
    p = os.path.expanduser(value)
    if value.startswith((".", "/", "~")) or os.path.exists(p):
        return os.path.abspath(p)
    return value


def normalized_config(cfg: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The config as it bears on finished work: no resumable or location fields, path fields normalized,
    JSON types only (what the manifest stores and the fingerprint hashes)."""
    d = config_to_dict(cfg) if isinstance(cfg, RunConfig) else cfg
    d = json.loads(json.dumps(d, default=str))
    for k in RESUMABLE_FIELDS | LOCATION_FIELDS:
        d.pop(k, None)
    for field_path in PATH_FIELDS:
        section, rest = field_path.split(".", 1)
        sec = d.get(section)
        if not isinstance(sec, dict):
            continue
        if rest.endswith("[]"):
            if isinstance(sec.get(rest[:-2]), list):
                sec[rest[:-2]] = [normalize_path_value(v) for v in sec[rest[:-2]]]
        elif "[]." in rest:
            key, _, item_field = rest.partition("[].")
            for item in sec.get(key) or []:
                if isinstance(item, dict) and item_field in item:
                    item[item_field] = normalize_path_value(item[item_field])
        elif rest in sec:
            sec[rest] = normalize_path_value(sec[rest])
    return d


def config_fingerprint(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(normalized_config(cfg), sort_keys=True).encode()).hexdigest()[:16]


def legacy_fingerprint(cfg: RunConfig) -> str:
    """The fingerprint manifests written before the `evarl-run/1` format carry (paths as spelled)."""
    d = config_to_dict(cfg)
    for k in RESUMABLE_FIELDS:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "l": [{"m": 2}]} -> {"a.b": 1, "l[0].m": 2}: dotted config paths to leaf values."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        out = {}
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def config_differences(
    old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """`path: old -> new` for every leaf that differs between two (normalized) config dicts. With ``defaults``
    (a normalized default config), a field ``old`` lacks and ``new`` has at its default is not a difference:
    a field added by a later evarl version, which the run used at its default."""
    a, b = flatten(old), flatten(new)
    base = flatten(defaults) if defaults is not None else {}
    unset = "(unset)"
    return [
        f"{k}: {json.dumps(a.get(k, unset))} -> {json.dumps(b.get(k, unset))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, unset) != b.get(k, unset) and not (k not in a and k in base and base[k] == b.get(k))
    ]


# ---------------------------------------------------------------- output digests


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_MAX_BYTES:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
            return "sha256:" + h.hexdigest()[:32]
        h.update(str(size).encode())
        for i in range(SAMPLE_BLOCKS):
            f.seek((size - SAMPLE_BYTES) * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BYTES))
    return "sampled:" + h.hexdigest()[:32]


def output_digest(path: Path) -> str | None:
    """The digest of a stage output (a file, or a directory such as a saved model); None if it is missing."""
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(path)}\0{_file_digest(p)}\n".encode())
        return "dir:" + h.hexdigest()[:32]
    if path.is_file():
        return _file_digest(path)
    return None


def legacy_digest(path: Path) -> str:
    """The output hash of manifests written before `evarl-run/1` (16 hex digits, whole contents)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
    elif path.exists():
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def digest_matches(path: Path, recorded: str) -> bool:
    """Whether the existing ``path`` still has the ``recorded`` digest (either format)."""
    if ":" in recorded:
        return output_digest(path) == recorded
    return legacy_digest(path) == recorded


def check_outputs(run_dir: Path, stages: dict[str, Any]) -> list[tuple[str, str]]:
    """Verify every finished stage's recorded outputs. Returns (stage, output) for each missing output; raises
    RunChangedError when an output exists with another digest. Legacy digests that match are upgraded in
    ``stages`` to the current format (so the next check is cheap)."""
    missing: list[tuple[str, str]] = []
    changed: list[tuple[str, str]] = []
    for key, entry in stages.items():
        if not isinstance(entry, dict) or entry.get("status") != "done":
            continue
        outputs = entry.get("outputs") or {}
        for rel, recorded in list(outputs.items()):
            p = run_dir / rel
            if not p.exists():
                missing.append((key, rel))
            elif not digest_matches(p, str(recorded)):
                changed.append((key, rel))
            elif ":" not in str(recorded):
                outputs[rel] = output_digest(p)
    if changed:
        key, rel = changed[0]
        more = (
            f" (and {len(changed) - 1} more: {', '.join(r for _, r in changed[1:4])})"
            if len(changed) > 1
            else ""
        )
        raise RunChangedError(
            f"{run_dir / rel}: changed since stage {key} finished{more}; later stages were built from the "
            "recorded version. Restore it, or delete it to have that stage and every later one redone. "
            "Nothing was changed."
        )
    return missing


def invalidate(stages: dict[str, Any], missing: list[tuple[str, str]]) -> list[str]:
    """Send the first stage with a missing output and every later finished stage (manifest order is the order
    they ran, so these are all that may have read it) back to "redo". Returns the keys sent back."""
    if not missing:
        return []
    keys = list(stages)
    first = min(keys.index(k) for k, _ in missing)
    reason = f"{missing[0][1]} was missing when the run was reopened"
    redo = []
    for k in keys[first:]:
        if stages[k].get("status") == "done":
            stages[k]["status"] = "redo"
            stages[k]["redo_reason"] = reason
            redo.append(k)
    return redo


# ---------------------------------------------------------------- run directories


def read_manifest(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(manifest, "") for an evarl run directory, else (None, why not)."""
    mp = run_dir / "manifest.json"
    if not mp.is_file():
        return None, "no manifest.json"
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{mp} is not valid JSON ({e})"
    if not isinstance(m, dict) or not isinstance(m.get("stages"), dict):
        return None, f"{mp} is not an evarl manifest (no 'stages' table)"
    if m.get("format") != MANIFEST_FORMAT and "config_fingerprint" not in m:
        return (
            None,
            f"{mp} is not an evarl manifest (no 'format': '{MANIFEST_FORMAT}' or 'config_fingerprint')",
        )
    return m, ""


def is_report_target(folder: Path) -> tuple[bool, str]:
    """(True, "") where `evarl report` may write report.md / report.html / summary.json / plots/: a folder
    that does not exist yet or is empty, one an earlier `evarl report` wrote (REPORT_MARKER), or a run
    directory (a manifest.json with a `stages` table, the lenient test: reports of older runs too)."""
    if not folder.exists():
        return True, ""
    if not folder.is_dir():
        return False, f"{folder} is a file, not a folder"
    if not any(folder.iterdir()) or (folder / REPORT_MARKER).is_file():
        return True, ""
    try:
        m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if isinstance(m, dict) and isinstance(m.get("stages"), dict):
            return True, ""
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        pass
    return False, (
        f"{folder} is not an evarl run directory (no evarl manifest.json) nor an empty folder; the report "
        "would overwrite report.md, report.html and summary.json there. Pass --out NEW_FOLDER. Nothing was changed."
    )


REPORT_MARKER = ".evarl-report"


def mark_report_folder(folder: Path) -> None:
    """Mark a folder `evarl report` wrote (not a run directory), so a later report may replace its files."""
    if not (folder / "manifest.json").exists():
        write_text(folder / REPORT_MARKER, json.dumps({"format": "evarl-report/1"}) + "\n")


def _blocking_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file (mkdir would fail there), if any."""
    for p in [path, *path.parents]:
        if p.exists():
            return p if not p.is_dir() else None
    return None


def _ours_to_ignore(name: str) -> bool:
    """The lock file, and temp files of an atomic write a kill interrupted (`.<name>.XXXX.tmp`)."""
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def lock_holder(path: Path) -> int | None:
    """The id of the process holding an flock on ``path``, from /proc/locks (Linux); None where unknown."""
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks", encoding="ascii") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(f":{ino}"):
                    return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


class RunLock:
    """An exclusive `flock` on ``<run>/.evarl.lock``, held until the process ends (the kernel releases it on any
    exit, SIGKILL included). One per directory per process: reopening a run in the same process reuses it."""

    held: dict[str, Any] = {}  # absolute run dir -> the open lock file of this process

    @classmethod
    def acquire(cls, run_dir: Path) -> None:
        path = run_dir / LOCK_NAME
        key = os.path.abspath(run_dir)
        f = cls.held.get(key)
        if f is not None:
            try:
                if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                    return  # this process already holds it
            except OSError:
                pass
            f.close()
            del cls.held[key]
        f = open(path, "a")  # noqa: SIM115 (kept open: the lock lives as long as the file is open)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            pid = lock_holder(path)
            who = f"process {pid}" if pid else "another evarl process"
            raise RunLockedError(
                f"{run_dir}: {who} is using this run directory (it holds {path}); wait for it to finish or "
                "stop it, then rerun. Nothing was changed."
            ) from e
        cls.held[key] = f

    @classmethod
    def release(cls, run_dir: Path) -> None:
        f = cls.held.pop(os.path.abspath(run_dir), None)
        if f is not None:
            f.close()


def _log(msg: str) -> None:
    print(f"[evarl {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.run_dir
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "stages": {}}

    # ------------------------------------------------------------ lifecycle
    def open(self) -> Run:
        """Create or reopen the run directory (see the module docstring for the rules). In a multi-process run
        rank 0 owns it: it checks, locks and writes the config and the manifest, then hands the manifest (or
        the error) to every rank; all ranks run the same stages in the same order and wait at each stage's
        end, so files rank 0 wrote are there for all."""
        from evarl.dist import broadcast_object, is_main

        outcome: tuple[str, Any] = ("ok", None)
        err: Exception | None = None
        if is_main():
            try:
                outcome = ("ok", self._open_main())
            except Exception as e:  # noqa: BLE001 (handed to every rank, so none waits forever; re-raised)
                err, outcome = e, ("error", str(e))
        outcome = broadcast_object(outcome)
        if err is not None:
            raise err
        if outcome[0] == "error":
            raise RunExistsError(outcome[1])
        self.manifest = outcome[1]
        return self

    def close(self) -> None:
        """Release the run directory's lock early (it is otherwise held until the process ends)."""
        RunLock.release(self.dir)

    def _adopt(self, fp: str) -> dict[str, Any] | None:
        """The manifest of the existing run at self.dir (None for a new or empty directory); refuses anything
        else, and a run started with another config, before anything is written."""
        d = self.dir
        if not d.exists():
            blocker = _blocking_ancestor(d)
            if blocker is not None:
                raise NotARunError(
                    f"{blocker}: is a file, not a folder; the run directory {d} cannot be made there"
                )
            return None
        if not d.is_dir():
            raise NotARunError(f"{d}: is a file, not a run directory; use another name= or output_dir=")
        if not [p for p in d.iterdir() if not _ours_to_ignore(p.name)]:
            return None
        m, why = read_manifest(d)
        if m is None:
            raise NotARunError(
                f"{d}: this folder is not an evarl run directory ({why}) and is not empty; evarl writes only "
                "into its own run directories. Use another name= or output_dir=. Nothing was changed."
            )
        old = m.get("config_fingerprint")
        if old and old not in (fp, legacy_fingerprint(self.cfg)):
            diffs = self._differences(
                m
            )  # [] = only fields a later evarl added, at their defaults: the same run
            if diffs is None or diffs:
                what = (
                    "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
                    if diffs
                    else "its config.yaml cannot be read to list the fields"
                )
                raise RunExistsError(
                    f"{d}: this run directory was started with a different config ({d / 'config.yaml'}): "
                    f"{what}. Use a new name= or delete the directory. Nothing was changed."
                )
        return m

    def _differences(self, manifest: dict[str, Any]) -> list[str] | None:
        """The fields this config changes against the run's (stored in the manifest, or its config.yaml for
        an older run); None when the run's config cannot be read."""
        old = manifest.get("config")
        if not isinstance(old, dict):  # an older manifest: compare with the run's config.yaml
            try:
                old = yaml.safe_load((self.dir / "config.yaml").read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                old = None
            if not isinstance(old, dict):
                return None
            old = normalized_config(old)
        return config_differences(old, normalized_config(self.cfg), normalized_config(RunConfig()))

    def _open_main(self) -> dict[str, Any]:
        d = self.dir
        name = self.cfg.name
        if (
            not name
            or name in (".", "..")
            or os.path.abspath(d.parent) != os.path.abspath(self.cfg.output_dir)
        ):
            raise ConfigError([f"name: must be a plain folder name inside output_dir, got {name!r}"])
        fp = config_fingerprint(self.cfg)
        self._adopt(fp)  # refuse early, before creating or locking anything
        d.mkdir(parents=True, exist_ok=True)
        RunLock.acquire(d)
        m = self._adopt(fp) or {"stages": {}}  # again under the lock: another process may have written it
        missing = check_outputs(d, m["stages"])  # raises on a changed output, before anything is written
        redo = invalidate(m["stages"], missing)
        m["format"] = MANIFEST_FORMAT
        m["config_fingerprint"] = fp
        m["config"] = normalized_config(self.cfg)
        m.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.manifest = m
        self._save()  # the manifest first: a directory with anything in it has its manifest
        write_text(d / "config.yaml", yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        if redo:
            gone = ", ".join(sorted({rel for _, rel in missing})[:4])
            _log(f"{d}: {gone} missing; redoing stage {redo[0]} and {len(redo) - 1} later stage(s)")
        return m

    def _save(self) -> None:
        write_json(self.manifest_path, self.manifest)  # atomic; a no-op on ranks other than 0

    def save(self) -> None:
        """Write the manifest (rank 0; atomic)."""
        self._save()

    # ------------------------------------------------------------ paths
    def round_dir(self, t: int) -> Path:
        from evarl.dist import is_main

        d = self.dir / f"round-{t:03d}"
        if is_main():
            d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------ stages
    def done(self, key: str) -> bool:
        return self.manifest["stages"].get(key, {}).get("status") == "done"

    def info(self, key: str) -> dict[str, Any]:
        return self.manifest["stages"].get(key, {})

    def mark_running(self, key: str) -> dict[str, Any]:
        """Record that stage ``key`` started (a killed run shows it as "running")."""
        entry = self.manifest["stages"].setdefault(key, {})
        if entry.get("status") == "redo":
            self._discard_outputs(entry)
        entry["status"] = "running"
        entry["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        entry.pop("redo_reason", None)
        self._save()
        take_truncated()  # prompts cut from here on belong to this stage
        return entry

    def _discard_outputs(self, entry: dict[str, Any]) -> None:
        """Delete the outputs a stage recorded when it last finished (rank 0; every rank waits), so its redo
        starts from its inputs, not from what it made of older ones."""
        import shutil

        from evarl.dist import barrier, is_main

        if is_main():
            root = self.dir.resolve()
            for rel in entry.get("outputs") or {}:
                path = (self.dir / rel).resolve()
                if root not in path.parents:  # a manifest names only paths inside its run directory
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        entry.pop("outputs", None)
        barrier()

    def finish(
        self, key: str, counts: dict[str, Any], seconds: float, outputs: list[Path] | None = None
    ) -> dict[str, Any]:
        """Record stage ``key`` as done with its counts, seconds and the digests of its existing outputs (taken
        on rank 0 after a barrier, so every rank records the same)."""
        from evarl.dist import barrier, broadcast_object, is_main

        barrier()  # rank 0's files of this stage are on disk for every rank
        cut = take_truncated()
        if cut:  # one warning per stage; the number goes into the manifest (this process's prompts)
            counts = {**counts, "prompts_truncated": counts.get("prompts_truncated", 0) + cut}
            _log(f"{key}: {cut} prompt(s) longer than their token budget were cut from the left (oldest turns "
                 "and the start of the instruction; system prompt, instruction end and assistant header kept)")  # fmt: skip
        entry = self.manifest["stages"].setdefault(key, {})
        entry.update(status="done", seconds=round(seconds, 2), counts=counts)
        if is_main():
            digests = {str(p.relative_to(self.dir)): output_digest(p) for p in (outputs or [])}
            entry["outputs"] = {k: v for k, v in digests.items() if v is not None}
        self.manifest["stages"][key] = entry = broadcast_object(entry)  # one manifest on every rank
        self._save()
        return entry

    def stage(
        self, key: str, fn: Callable[[], dict[str, Any] | None], outputs: list[Path] | None = None
    ) -> dict:
        """Run `fn` unless `key` is finished; record counts, seconds and output digests."""
        if self.done(key):
            return self.manifest["stages"][key]
        self.mark_running(key)
        t0 = time.time()
        counts = fn() or {}
        return self.finish(key, counts, time.time() - t0, outputs)

    def require(self, path: Path, key: str) -> Path:
        """``path``, an output of the finished stage ``key``; a clear error if it vanished during this run."""
        if not path.exists():
            raise RunChangedError(
                f"{path}: missing although stage {key} finished (deleted while the run was going?); rerun the "
                "same command to redo that stage and every later one"
            )
        return path

    def set(self, key: str, value: Any) -> None:
        self.manifest[key] = value
        self._save()
