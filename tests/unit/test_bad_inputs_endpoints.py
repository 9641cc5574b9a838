"""Bad endpoint inputs through `evarl.cli.main` in-process, against a canned HTTP server on 127.0.0.1: each
exits 2 with one line naming the culprit (flag, config key or URL), no traceback, the API key never shown, and
every pre-existing file unchanged. A failed `evarl eval` records its reason in `<out>/summary.json`."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from evarl.cli import main

KEY = "sk-test-0123456789abcdef"


class Canned:
    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0


@pytest.fixture()
def server():
    state = Canned()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code: int, data: bytes) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "5")
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests += 1
            mode = state.mode
            if mode == "stall":
                time.sleep(1.5)
            if mode == "500":
                return self._send(500, b'{"error": {"message": "overloaded"}}')
            if mode == "401":  # a server that echoes what it was sent
                auth = self.headers.get("Authorization", "")
                return self._send(401, json.dumps({"error": {"message": f"bad key {auth}"}}).encode())
            if mode == "badjson":
                return self._send(200, b"<html>not json")
            if mode == "nochoices":
                return self._send(200, b'{"object": "chat.completion", "choices": []}')
            if body["model"] != "served":
                msg = {"error": {"message": f"The model `{body['model']}` does not exist."}}
                return self._send(404, json.dumps(msg).encode())
            out = {"choices": [{"message": {"content": "Output (a)"}, "finish_reason": "stop"}]}
            return self._send(200, json.dumps(out).encode())

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", state
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("EVARL_CACHE", str(tmp_path / "cache"))  # the response cache starts empty


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in ("Say hi.", "Count to 3.")))
    rows = [{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Count to 3.", "output": "1 2 3"}]
    outputs, base = tmp_path / "model.jsonl", tmp_path / "base.jsonl"
    outputs.write_text("".join(json.dumps({**r, "generator": "m"}) + "\n" for r in rows))
    base.write_text("".join(json.dumps({**r, "generator": "ref"}) + "\n" for r in rows))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("results of an earlier evaluation")
    return {"prompts": prompts, "outputs": outputs, "base": base, "out": out}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "cache" not in p.relative_to(root).parts
    }


def _fails(argv: list[str], capsys, root: Path, *needles: str) -> str:
    """Run, and check: exit 2, one `evarl: error:` message (a config error lists its one item on the next,
    indented line) holding every needle, no traceback, no key, and every file that existed before is unchanged.
    Returns the message."""
    before = _hashes(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    starts = [i for i, x in enumerate(err.splitlines()) if x.startswith("evarl: error:")]
    assert len(starts) == 1, err
    message = " ".join(x.strip() for x in err.splitlines()[starts[0] :] if x.startswith(("evarl:", "  ")))
    assert "Traceback" not in err and KEY not in err
    for n in needles:
        assert n in message, (n, message)
    after = _hashes(root)
    assert {k: after.get(k) for k in before} == before
    return message


def _judge_args(files: dict[str, Path], url: str, *extra: str) -> list[str]:
    return ["eval", "--format", "alpaca", "--prompts", str(files["prompts"]), "--outputs", str(files["outputs"]),
            "--baseline-outputs", str(files["base"]), "--judge-endpoint", url, "--judge-model", "served",
            "--bootstrap", "10", "--out", str(files["out"]), *extra]  # fmt: skip


def _model_args(files: dict[str, Path], url: str, model: str = "served", *extra: str) -> list[str]:
    return ["eval", "--format", "alpaca", "--prompts", str(files["prompts"]), "--backend", "openai",
            "--endpoint", url, "--endpoint-model", model, "--out", str(files["out"]), *extra]  # fmt: skip


def _summary_error(files: dict[str, Path]) -> str:
    s = json.loads((files["out"] / "summary.json").read_text())
    assert s["status"] == "failed" and "win_rate" not in json.dumps(s)
    return s["error"]


def test_key_over_plain_http_to_another_host(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    new_out = tmp_path / "new-out"
    args = _model_args(files, "http://10.9.8.7:8000/v1")
    args[args.index("--out") + 1] = str(new_out)
    _fails(args, capsys, tmp_path, "--endpoint", "http://10.9.8.7:8000/v1", "$OPENAI_API_KEY", "https")
    assert not new_out.exists()  # refused before anything was written


def test_credentials_in_the_url(files, tmp_path, capsys):
    line = _fails(_judge_args(files, "https://me:hunter2@judge.example/v1"), capsys, tmp_path,
                  "--judge-endpoint", "credentials in the URL")  # fmt: skip
    assert "hunter2" not in line and not (files["out"] / "summary.json").exists()


def test_pasted_key_in_api_key_env_is_refused_before_the_run_dir(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"name": "r", "output_dir": str(tmp_path / "runs"),
                                   "generation": {"api_key_env": KEY}}))  # fmt: skip
    _fails(["run", str(cfg), "--quiet"], capsys, tmp_path, "generation.api_key_env", "NAME of an environment")
    assert not (tmp_path / "runs").exists()  # no config.yaml holding the key was written


def test_config_endpoint_over_http_with_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"creator": {"model": "endpoint"}, "generation": {
        "endpoint": "http://192.168.1.20:8000/v1", "endpoint_model": "m", "api_key_env": "MY_KEY"}}))  # fmt: skip
    _fails(
        ["validate", str(cfg)],
        capsys,
        tmp_path,
        "generation.endpoint",
        "http://192.168.1.20:8000/v1",
        "$MY_KEY",
    )


def test_unreachable_judge_endpoint_fails_the_evaluation(files, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    _fails(_judge_args(files, url, "--max-retries", "1"), capsys, tmp_path, "cannot reach", url)
    assert "cannot reach" in _summary_error(files)


def test_judge_answering_500_everywhere(files, server, tmp_path, capsys):
    url, state = server
    state.mode = "500"
    _fails(_judge_args(files, url, "--max-retries", "1"), capsys, tmp_path, "judge: all 4 requests failed",
           "HTTP 500", "gave up after 2 attempts")  # fmt: skip
    assert state.requests == 8 and "HTTP 500" in _summary_error(files)


def test_response_that_is_not_json(files, server, tmp_path, capsys):
    url, state = server
    state.mode = "badjson"
    _fails(_model_args(files, url), capsys, tmp_path, "response is not JSON", url)
    assert "not JSON" in _summary_error(files)


def test_response_without_choices(files, server, tmp_path, capsys):
    url, state = server
    state.mode = "nochoices"
    _fails(_model_args(files, url), capsys, tmp_path, "malformed chat-completions response", url)


def test_timeout(files, server, tmp_path, capsys):
    url, state = server
    state.mode = "stall"
    t0 = time.time()
    _fails(_model_args(files, url, "served", "--timeout-s", "0.3", "--max-retries", "0"), capsys, tmp_path,
           "timed out after 0.3s", url)  # fmt: skip
    assert time.time() - t0 < 1.4


def test_wrong_model_name_is_a_404(files, server, tmp_path, capsys):
    url, state = server
    _fails(_model_args(files, url, "nope"), capsys, tmp_path, "HTTP 404", "'nope'", "name the server serves")
    assert state.requests >= 1 and "HTTP 404" in _summary_error(files)


def test_rejected_key_is_redacted(files, server, tmp_path, capsys, monkeypatch):
    url, state = server
    state.mode = "401"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    _fails(_model_args(files, url), capsys, tmp_path, "HTTP 401", "***")
    assert KEY not in (files["out"] / "summary.json").read_text()


def test_bad_client_options(files, server, tmp_path, capsys):
    url, _ = server
    _fails(_model_args(files, url, "served", "--timeout-s", "0"), capsys, tmp_path, "--timeout-s")
