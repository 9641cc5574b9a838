"""OpenAI-compatible client (on the `openai` package) against a canned stdlib HTTP server on 127.0.0.1:
retries honouring retry-after-ms, non-retryable and endpoint-wide errors, cache (keyed by the endpoint URL too),
the API key only from the environment and never in caches or messages, response parsing. The real-model server
is in tests/integration/test_endpoint.py."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evarl.endpoints import endpoint_problem, is_loopback_host, redact
from evarl.generation.base import SamplingParams
from evarl.generation.openai_api import (
    EndpointError,
    OpenAIGenerator,
    cache_key,
    parse_response,
)
from evarl.registry import BACKENDS


class Canned:
    def __init__(self) -> None:
        self.fail: list[int] = []  # statuses to answer first, in order
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.echo = ""  # text the server puts into its error messages (e.g. a key it echoes)


@pytest.fixture()
def server():
    state = Canned()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep test output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            if state.fail:
                code = state.fail.pop(0)
                self.send_response(code)
                self.send_header("retry-after-ms", "10")  # honoured by the client: keeps the test fast
                self.end_headers()
                self.wfile.write(json.dumps({"error": {"message": f"nope {state.echo}"}}).encode())
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
    return OpenAIGenerator(url, "m", cache_dir=tmp_path / "api", **kw)


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
    monkeypatch.setenv("OPENAI_API_KEY", "the-default-variable")
    _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY", use_cache=False).generate(CONV[:1], SamplingParams(n=1))
    assert state.headers[-1].get("authorization") == "Bearer sekrit"
    monkeypatch.delenv("EVARL_TEST_KEY")
    _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY", use_cache=False).generate(CONV[:1], SamplingParams(n=1))
    # the openai package's own $OPENAI_API_KEY fallback is off: no key travels unless its variable is named
    assert "authorization" not in state.headers[-1]


def test_key_never_in_cache_repr_or_errors(server, tmp_path, monkeypatch):
    url, state = server
    monkeypatch.setenv("EVARL_TEST_KEY", "sk-verysecret123")
    g = _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY")
    g.generate(CONV, SamplingParams(n=1))
    assert "sk-verysecret123" not in repr(g) and "sk-verysecret123" not in json.dumps(g.__dict__, default=str)
    for f in (tmp_path / "api").rglob("*"):
        if f.is_file():
            assert b"sk-verysecret123" not in f.read_bytes()
    state.echo, state.fail = "your key sk-verysecret123 is wrong", [401]
    with pytest.raises(EndpointError) as e:
        _gen(url, tmp_path, api_key_env="EVARL_TEST_KEY", use_cache=False).generate(
            CONV[:1], SamplingParams(n=1)
        )
    assert e.value.status == 401 and "sk-verysecret123" not in str(e.value) and "***" in str(e.value)


def test_cache_key_includes_the_endpoint(server, tmp_path):
    url, state = server
    p = SamplingParams(n=1, temperature=1.0, seed=4)
    _gen(url, tmp_path).generate(CONV[:1], p)
    other = url.replace("127.0.0.1", "localhost")  # the same server under another URL: a different endpoint
    g = _gen(other, tmp_path)
    g.generate(CONV[:1], p)
    assert g.stats["cache_hits"] == 0 and len(state.requests) == 2
    assert len(list((tmp_path / "api").rglob("*.json"))) == 2


def test_endpoint_wide_errors_raise_even_when_soft(server, tmp_path):
    url, state = server
    state.fail = [404]
    soft = _gen(url, tmp_path, use_cache=False, raise_on_error=False)
    with pytest.raises(EndpointError, match="HTTP 404.*name the server serves"):
        soft.generate(CONV, SamplingParams(n=2))
    state.fail = [400]
    assert soft.generate(CONV[:1], SamplingParams(n=1))[0][0].finish_reason == "error"
    assert soft.last_error is not None and "HTTP 400" in soft.last_error


def test_helpers():
    msgs = [{"role": "user", "content": "a"}]
    assert cache_key("http://a/v1", "m", msgs, {"t": 1}) != cache_key(
        "http://a/v1", "m", [{"role": "user", "content": "b"}], {"t": 1}
    )
    assert cache_key("http://a/v1", "m", msgs, {"t": 1}) != cache_key("http://b/v1", "m", msgs, {"t": 1})
    with pytest.raises(EndpointError, match="malformed"):
        parse_response({"choices": []})
    assert parse_response({"choices": [{"message": {"content": None}, "finish_reason": "stop"}]}).text == ""
    with pytest.raises(EndpointError, match="http"):
        OpenAIGenerator("127.0.0.1:8000", "m")
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback_host(host), host
    for host in ("10.0.0.5", "example.com", "128.0.0.1", "", None, "localhost.example.com"):
        assert not is_loopback_host(host), host
    assert redact("a KEY b KEY", "KEY") == "a *** b ***" and redact("x", None) == "x"


def test_key_only_over_https_or_loopback(monkeypatch):
    monkeypatch.setenv("EVARL_TEST_KEY", "k")
    assert endpoint_problem("http://127.0.0.1:8000/v1", "EVARL_TEST_KEY") is None
    assert endpoint_problem("http://[::1]:8000/v1", "EVARL_TEST_KEY") is None
    assert endpoint_problem("https://api.example.com/v1", "EVARL_TEST_KEY") is None
    msg = endpoint_problem("http://10.1.2.3:8000/v1", "EVARL_TEST_KEY")
    assert msg and "http://10.1.2.3:8000/v1" in msg and "$EVARL_TEST_KEY" in msg
    monkeypatch.delenv("EVARL_TEST_KEY")
    assert endpoint_problem("http://10.1.2.3:8000/v1", "EVARL_TEST_KEY") is None  # no key, nothing to leak
    assert "credentials in the URL" in endpoint_problem("https://u:pw@h.example/v1", "EVARL_TEST_KEY")
    bad = endpoint_problem("https://h.example/v1", "sk-pasted-key-123")
    assert "NAME of an environment variable" in bad and "sk-pasted-key-123" not in bad
