"""Run directory, manifest and resume.

Each stage is a function from files to files. The manifest records, per stage, its status, counts, timings and
a hash of its outputs. `evarl run` on an existing run directory skips every finished stage and resumes the
first unfinished one; chunked stages (generation) also keep a `.partial.jsonl` so a stage killed halfway
continues from its last finished chunk. All writes are atomic (temp file + rename), so a SIGKILL never leaves a
half-written artifact that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from evarl.config import RunConfig, config_to_dict
from evarl.data_io import read_json, write_json

# Fields that may change between invocations of the same run without invalidating finished stages.
RESUMABLE_FIELDS = {"rounds", "threads"}


def config_fingerprint(cfg: RunConfig) -> str:
    d = config_to_dict(cfg)
    for k in RESUMABLE_FIELDS:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(p.read_bytes())
    elif path.exists():
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class RunExistsError(RuntimeError):
    pass


class Run:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.run_dir
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict[str, Any] = {"stages": {}}

    # ------------------------------------------------------------ lifecycle
    def open(self) -> Run:
        """Create or reopen the run directory. In a multi-process run rank 0 owns it: it writes the config and
        the manifest; every rank keeps the same manifest in memory (all ranks run the same stages in the same
        order) and waits at each stage's end, so files rank 0 wrote are there for all."""
        from evarl.dist import barrier, is_main

        if is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
        barrier()
        fp = config_fingerprint(self.cfg)
        if self.manifest_path.exists():
            self.manifest = read_json(self.manifest_path)
            old = self.manifest.get("config_fingerprint")
            if old and old != fp:
                raise RunExistsError(
                    f"{self.dir}: this run directory was started with a different config "
                    f"({self.dir / 'config.yaml'}); use a new name= or delete the directory. "
                    "Nothing was changed."
                )
        self.manifest["config_fingerprint"] = fp
        self.manifest.setdefault("stages", {})
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        if is_main():
            (self.dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(self.cfg), sort_keys=False))
        self._save()
        barrier()
        return self

    def _save(self) -> None:
        write_json(self.manifest_path, self.manifest)  # a no-op on ranks other than 0

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

    def stage(
        self, key: str, fn: Callable[[], dict[str, Any] | None], outputs: list[Path] | None = None
    ) -> dict:
        """Run `fn` unless `key` is finished; record counts, seconds and output hashes."""
        if self.done(key):
            return self.manifest["stages"][key]
        entry = self.manifest["stages"].setdefault(key, {})
        entry["status"] = "running"
        entry["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._save()
        t0 = time.time()
        counts = fn() or {}
        from evarl.dist import barrier, broadcast_object

        barrier()  # rank 0's files of this stage are on disk for every rank
        entry.update(
            status="done",
            seconds=round(time.time() - t0, 2),
            counts=counts,
            outputs={str(p.relative_to(self.dir)): file_hash(p) for p in (outputs or []) if p.exists()},
        )
        self.manifest["stages"][key] = entry = broadcast_object(entry)  # one manifest on every rank
        self._save()
        return entry

    def set(self, key: str, value: Any) -> None:
        self.manifest[key] = value
        self._save()
