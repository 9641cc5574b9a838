"""Loading a run directory for a report: its config, manifest, round directories and their files.

Tolerant by design: a report is never the thing that crashes. A missing file is `None`, an unreadable file or a
bad JSON line is skipped and becomes a note (`RunData.notes`, `RoundData.notes`), and a round the config plans
but that has no directory yet is listed as not run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROUND_RE = re.compile(r"^round-(\d{3,})$")


ROUND_FILES = (
    "prompts.jsonl",
    "generations.jsonl",
    "scores.jsonl",
    "info.jsonl",
    "sampled.jsonl",
    "evolved.jsonl",
    "train_prompts.jsonl",
    "train_generations.jsonl",
    "train_scores.jsonl",
    "pairs.jsonl",
    "prompt_scores.jsonl",
    "eval_generations.jsonl",
)


@dataclass
class RoundData:
    """One `round-NNN/` directory: its JSONL files by name (None = missing), eval.json, the training log."""

    idx: int
    path: Path
    files: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    train_log: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, name: str) -> list[dict[str, Any]] | None:
        return self.files.get(name)

    @property
    def heldout(self) -> dict[str, Any] | None:
        h = (self.eval or {}).get("heldout")
        return h if isinstance(h, dict) else None


@dataclass
class RunData:
    """One run directory: its config.yaml and manifest.json (None when unreadable) and its rounds."""

    name: str
    path: Path
    config: dict[str, Any] | None
    manifest: dict[str, Any] | None
    rounds: dict[int, RoundData]
    notes: list[str]


def _read_jsonl_tolerant(path: Path, notes: list[str]) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    rows = []
    bad = 0
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    if bad == 1:
                        notes.append(f"{path.parent.name}/{path.name}:{i}: invalid JSON line skipped")
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
    except OSError as e:
        notes.append(f"{path}: unreadable ({e})")
        return None
    if bad > 1:
        notes.append(f"{path.parent.name}/{path.name}: {bad} invalid JSON lines skipped in all")
    return rows


def _read_json_tolerant(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.parent.name}/{path.name}: unreadable ({e}); skipped")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path.parent.name}/{path.name}: not a JSON object; skipped")
        return None
    return obj


def load_run(run_dir: Path) -> RunData:
    """Everything a report needs from one run directory; problems become `notes`, never exceptions."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    if not run_dir.is_dir():
        return RunData(run_dir.name, run_dir, None, None, {}, [f"{run_dir}: not a run directory; skipped"])
    config = None
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        try:
            import yaml

            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else None
        except Exception as e:  # noqa: BLE001 - any YAML problem is a note, not a crash
            notes.append(f"config.yaml: unreadable ({type(e).__name__}); config columns skipped")
    else:
        notes.append("config.yaml missing; config columns skipped")
    manifest = _read_json_tolerant(run_dir / "manifest.json", notes)
    rounds: dict[int, RoundData] = {}
    for d in sorted(run_dir.iterdir()):
        m = ROUND_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        rd = RoundData(int(m.group(1)), d)
        for fname in ROUND_FILES:
            rd.files[fname] = _read_jsonl_tolerant(d / fname, rd.notes)
        rd.eval = _read_json_tolerant(d / "eval.json", rd.notes)
        rd.train_log = _read_jsonl_tolerant(d / "train" / "train_log.jsonl", rd.notes)
        rounds[rd.idx] = rd
        notes.extend(f"{d.name}/{n}" if not n.startswith(d.name) else n for n in rd.notes)
    planned = (config or {}).get("rounds")
    if isinstance(planned, int) and not isinstance(planned, bool):
        not_run = [t for t in range(1, planned + 1) if t not in rounds]
        if not_run:
            notes.append(
                f"round(s) {', '.join(str(t) for t in not_run)} of {planned} not run yet (no directory); skipped"
            )
    if not rounds:
        notes.append("no round-NNN directories yet")
    else:
        missing_eval = [r for r in sorted(rounds) if rounds[r].heldout is None]
        if missing_eval:
            notes.append(
                "no held-out evaluation (eval.json) for round(s) "
                + ", ".join(str(r) for r in missing_eval)
                + "; those rounds are left out of the held-out tables and plots"
            )
    name = str((config or {}).get("name") or run_dir.name)
    return RunData(name, run_dir, config, manifest, rounds, notes)
