"""Preference JSONL parsing for reward-model training: formats and file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.reward_training.data import PreferenceDataError, load_preferences, write_preferences


def _write(tmp_path: Path, rows: list) -> Path:
    p = tmp_path / "prefs.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


def test_plain_conversational_and_implicit(tmp_path: Path) -> None:
    user = [{"role": "user", "content": "q"}]
    p = _write(
        tmp_path,
        [
            {"prompt": "q", "chosen": "good", "rejected": "bad", "subset": "chat"},
            "",
            {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": "g"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            {
                "chosen": [*user, {"role": "assistant", "content": "g2"}],
                "rejected": [*user, {"role": "assistant", "content": "b2"}],
            },
        ],
    )
    rows = load_preferences(p)
    assert [(r.prompt, r.chosen, r.rejected) for r in rows] == [
        (user, "good", "bad"),
        (user, "g", "b"),
        (user, "g2", "b2"),
    ]
    assert rows[0].subset == "chat" and [r.line for r in rows] == [1, 3, 4]
    out = tmp_path / "round.jsonl"
    write_preferences(out, rows)
    again = load_preferences(out)
    assert [(r.prompt, r.chosen, r.rejected, r.subset) for r in again] == [
        (r.prompt, r.chosen, r.rejected, r.subset) for r in rows
    ]


@pytest.mark.parametrize(
    "row,msg",
    [
        ({"prompt": "q", "rejected": "b"}, "prefs.jsonl:2: missing field 'chosen'"),
        ("{not json", "prefs.jsonl:2: not valid JSON"),
        ({"prompt": "q", "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}, "role 'assistant'"),
        ({"prompt": [{"content": "x"}], "chosen": "a", "rejected": "b"}, "prompt[0] must be a message"),
        ({"chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}, "prefs.jsonl:2"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, row, msg: str) -> None:
    p = _write(tmp_path, [{"prompt": "q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(PreferenceDataError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        load_preferences(p)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(PreferenceDataError, match="does not exist"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(PreferenceDataError, match="no preference rows"):
        load_preferences(tmp_path / "e.jsonl")
