"""OpenAI-compatible client against a canned stdlib HTTP server on 127.0.0.1: retries/backoff, non-retryable
errors, cache, API key from the environment, response parsing. The real-model server is in
tests/integration/test_endpoint.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evarl.generation.base import SamplingParams
from evarl.generation.openai_api import (
    EndpointError,
    OpenAIGenerator,
    backoff_delay,
    cache_key,
    parse_response,
)
from evarl.registry import BACKENDS


class Canned:
    def __init__(self) -> None:
        self.fail: list[int] = []  # statuses to answer first, in order
        self.requests: list[dict] = []
        self.headers: list[dict] = []


@pytest.fixture()
def server():
    state = Canned()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep test output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.headers.append(dict(self.headers))
            if state.fail:
                code = state.fail.pop(0)
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(b'{"error": "nope"}')
                return
            text = "echo: " + body["messages"][-1]["content"] + f" seed={body['seed']}"
            out = {
                "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
                "usage": {"completion_tokens": 7},
            }
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", state
    srv.shutdown()
    srv.server_close()


def _gen(url, tmp_path, **kw):
    return OpenAIGenerator(url, "m", cache_dir=tmp_path / "api", backoff_s=0.01, **kw)


CONV = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]


def test_registered_and_generates_n_samples(server, tmp_path):
    url, state = server
    assert BACKENDS.get("openai") is OpenAIGenerator
    out = _gen(url, tmp_path).generate(CONV, SamplingParams(n=2, temperature=0.5, max_new_tokens=9, seed=3))
    assert [[o.text for o in row] for row in out] == [
        ["echo: hi seed=3000", "echo: hi seed=3001"],
        ["echo: yo seed=3000", "echo: yo seed=3001"],
    ]
    assert out[0][0].num_tokens == 7 and out[0][0].finish_reason == "length"
    assert state.requests[0]["max_tokens"] == 9 and state.requests[0]["model"] == "m"


def test_retries_429_and_5xx_then_succeeds(server, tmp_path):
    url, state = server
    state.fail = [429, 500, 503]
    g = _gen(url, tmp_path, use_cache=False)
    out = g.generate(CONV[:1], SamplingParams(n=1))
    assert out[0][0].text.startswith("echo: hi")
    assert len(state.requests) == 4 and g.stats["retries"] == 3


def test_gives_up_after_max_retries(server, tmp_path):
    url, state = server
    state.fail = [500] * 10
    g = _gen(url, tmp_path, max_retries=2, use_cache=False)
    with pytest.raises(EndpointError, match="gave up after 3 attempts"):
        g.generate(CONV[:1], SamplingParams(n=1))
    assert len(state.requests) == 3
    state.fail = [500] * 10
    soft = _gen(url, tmp_path, max_retries=1, use_cache=False, raise_on_error=False)
    assert soft.generate(CONV[:1], SamplingParams(n=1))[0][0].finish_reason == "error"


def test_4xx_is_not_retried(server, tmp_path):
    url, state = server
    state.fail = [400]
    with pytest.raises(EndpointError, match="HTTP 400") as e:
        _gen(url, tmp_path).generate(CONV[:1], SamplingParams(n=1))
    assert e.value.status == 400 and len(state.requests) == 1


def test_cache_hits_skip_the_server(server, tmp_path):
    url, state = server
    p = SamplingParams(n=2, temperature=1.0, seed=1)
    first = _gen(url, tmp_path).generate(CONV, p)
    assert len(state.requests) == 4
    g2 = _gen(url, tmp_path)
    again = g2.generate(CONV, p)
    assert len(state.requests) == 4 and g2.stats["cache_hits"] == 4
    assert [[o.text for o in r] for r in again] == [[o.text for o in r] for r in first]
    _gen(url, tmp_path).generate(CONV, SamplingParams(n=2, temperature=1.0, seed=2))  # new params: new key
    assert len(state.requests) == 8
    assert list((tmp_path / "api").rglob("*.json"))


def test_api_key_only_from_named_env(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("EVARL_TEST_KEY", "sekrit")
    _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY", use_cache=False).generate(CONV[:1], SamplingParams(n=1))
    assert state.headers[-1].get("Authorization") == "Bearer sekrit"
    monkeypatch.delenv("EVARL_TEST_KEY")
    _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY", use_cache=False).generate(CONV[:1], SamplingParams(n=1))
    assert "Authorization" not in state.headers[-1]


def test_helpers():
    assert cache_key("m", [{"role": "user", "content": "a"}], {"t": 1}) != cache_key(
        "m", [{"role": "user", "content": "b"}], {"t": 1}
    )
    assert backoff_delay(0, 1.0, 30.0, retry_after=2.0) == 2.0
    assert 4.0 <= backoff_delay(2, 1.0, 30.0) <= 5.0
    assert backoff_delay(10, 1.0, 30.0) == 30.0
    with pytest.raises(EndpointError, match="malformed"):
        parse_response({"choices": []})
    assert parse_response({"choices": [{"message": {"content": None}, "finish_reason": "stop"}]}).text == ""
    with pytest.raises(ValueError, match="http"):
        OpenAIGenerator("127.0.0.1:8000", "m")
