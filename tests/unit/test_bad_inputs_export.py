"""Bad inputs to data and models out (`evarl export`, `model.chat_template`, `model.push_to_hub`): each exits
with status 2 and an `evarl: error:` message naming the culprit (the argument, path, file:line or config key),
no traceback, and every file that was there before is unchanged (by hash), none added."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_input import refused as _refused
from tests.unit.test_export import make_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def test_export_to_a_non_empty_file_is_refused(tmp_path: Path, run: Path, capsys) -> None:
    out = tmp_path / "mine.jsonl"
    out.write_text('{"keep": "me"}\n')
    err = _refused(["export", str(run), "--out", str(out)], tmp_path, capsys, f"--out {out}", "not empty")
    assert "nothing was written" in err


def test_export_to_a_non_empty_folder_is_refused(tmp_path: Path, run: Path, capsys) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(["export", str(run), "--format", "datasets", "--out", str(out)], tmp_path, capsys, str(out))


def test_export_from_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8")
    _refused(
        ["export", str(folder), "--out", str(tmp_path / "o.jsonl")], tmp_path, capsys, str(folder), "manifest"
    )


def test_unknown_what(tmp_path: Path, run: Path, capsys) -> None:
    _refused(["export", str(run), "--what", "pears", "--out", str(tmp_path / "o.jsonl")], tmp_path, capsys,
             "--what", "'pears'", "pairs, generations, scores, prompts")  # fmt: skip


def test_unknown_format(tmp_path: Path, run: Path, capsys) -> None:
    _refused(["export", str(run), "--format", "csv", "--out", str(tmp_path / "o.csv")], tmp_path, capsys,
             "--format", "'csv'")  # fmt: skip


@pytest.mark.parametrize(
    ("value", "culprit"), [("7", "no round 7 (rounds: 1, 2)"), ("two", "'two'"), ("0", "from 1")]
)
def test_round_that_does_not_exist(tmp_path: Path, run: Path, capsys, value: str, culprit: str) -> None:
    _refused(["export", str(run), "--round", value, "--out", str(tmp_path / "o.jsonl")], tmp_path, capsys,
             "--round", culprit)  # fmt: skip


def test_round_without_pairs_yet(tmp_path: Path, run: Path, capsys) -> None:
    (run / "round-002" / "pairs.jsonl").unlink()
    _refused(["export", str(run), "--round", "2", "--out", str(tmp_path / "o.jsonl")], tmp_path, capsys,
             "no pairs in round 2")  # fmt: skip


def test_damaged_pairs_line_is_named(tmp_path: Path, run: Path, capsys) -> None:
    p = run / "round-001" / "pairs.jsonl"
    p.write_text(p.read_text() + '{"prompt_id": "x", "chosen": \n')
    _refused(
        ["export", str(run), "--out", str(tmp_path / "o.jsonl")], tmp_path, capsys, f"{p}:3", "not valid JSON"
    )


# ---------------------------------------------------------------- config: chat template, push_to_hub


def _validate(tmp_path: Path, capsys, *overrides: str, culprits: tuple[str, ...]) -> None:
    _refused(["validate", f"output_dir={tmp_path / 'runs'}", *overrides], tmp_path, capsys, *culprits)


def test_chat_template_path_that_does_not_exist(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jinja"
    _validate(
        tmp_path, capsys, f"model.chat_template={missing}", culprits=("model.chat_template", str(missing))
    )


def test_chat_template_with_a_jinja_syntax_error(tmp_path: Path, capsys) -> None:
    tpl = tmp_path / "broken.jinja"
    tpl.write_text("{% for m in messages %}{{ m.content }}\n{% endfor\n")
    _validate(
        tmp_path, capsys, f"model.chat_template={tpl}", culprits=("model.chat_template", "not a valid Jinja")
    )


@pytest.fixture
def no_hf_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


def test_push_to_hub_without_a_token(tmp_path: Path, capsys, no_hf_token: None) -> None:
    _validate(tmp_path, capsys, "model.push_to_hub=me/my-model",
              culprits=("model.push_to_hub", "no Hugging Face token", "HF_TOKEN"))  # fmt: skip


def test_push_to_hub_with_a_malformed_repo_id(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    _validate(
        tmp_path, capsys, "model.push_to_hub=me/my/model", culprits=("model.push_to_hub", "'me/my/model'")
    )


def test_failed_upload_is_one_line_and_keeps_the_files(tmp_path: Path, monkeypatch, capsys) -> None:
    """An upload that fails (here: the hub refuses) names the repo and says a rerun retries it."""
    import huggingface_hub

    from evarl.config import load_config
    from evarl.model_card import finish_model
    from evarl.runs import Run, RunLock

    class Refusing:
        def create_repo(self, repo_id: str, **kw: object) -> str:
            raise PermissionError("401 Unauthorized: invalid token")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    cfg = load_config(None, [f"output_dir={tmp_path}", "name=r", "model.push_to_hub=me/m"])
    r = Run(cfg).open()
    try:
        src = tmp_path / "trained"
        src.mkdir()
        (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
        from evarl.errors import UploadError

        with pytest.raises(
            UploadError, match=r"model.push_to_hub: uploading .* to 'me/m' failed .*rerun"
        ) as exc:
            finish_model(r, cfg, src, 1, log=lambda m: None)
        from evarl.failures import expected_message

        assert expected_message(exc.value) == str(exc.value)  # `evarl run` prints it as one line, exit 2
        assert "Traceback" not in str(exc.value) and "\n" not in str(exc.value)
        assert (src / "config.json").exists() and (r.dir / "model" / "config.json").exists()
        assert not (r.manifest.get("final_model") or {}).get("pushed")
    finally:
        for key in list(RunLock.held):
            RunLock.release(Path(key))
