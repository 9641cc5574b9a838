"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 that serves /v1/chat/completions from a
real (tiny, randomly initialised) Llama with SmolLM2's tokenizer through `HFGenerator`. The server can be told
to answer 429/500 first, to stall (timeouts), and it records concurrency.

`transformers serve` (extra transformers[serving]) is the heavier alternative named in DESIGN.md; this stdlib
server keeps the test inside the 2-core CI budget while exercising the same HTTP protocol.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evarl.generation.base import SamplingParams
from evarl.generation.openai_api import EndpointError, OpenAIGenerator


class ModelServer:
    def __init__(self, model_dir: Path) -> None:
        from evarl.generation.hf import HFGenerator

        self.gen = HFGenerator.from_path(str(model_dir), batch_size=4)
        self.lock = threading.Lock()  # the model serves one request at a time
        self.fail: list[int] = []
        self.stall_s = 0.0
        self.hold_s = 0.0  # time each request is held *outside* the model lock (to observe concurrency)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.active = 0  # handlers running, including stalled ones from an earlier test
        self.srv: ThreadingHTTPServer | None = None

    def start(self) -> str:
        state = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                with state.lock:
                    state.active += 1
                try:
                    self._serve()
                finally:
                    with state.lock:
                        state.active -= 1

            def _serve(self):
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests += 1
                    code = state.fail.pop(0) if state.fail else 200
                if code != 200:
                    self.send_response(code)
                    self.send_header("retry-after-ms", "20")  # the client honours it (keeps the test short)
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": {"message": f"injected {code}"}}).encode())
                    return
                if state.stall_s:
                    time.sleep(state.stall_s)
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                time.sleep(state.hold_s)
                params = SamplingParams(
                    n=1,
                    temperature=float(body.get("temperature", 0.0)),
                    top_p=float(body.get("top_p", 1.0)),
                    max_new_tokens=int(body.get("max_tokens", 8)),
                    seed=int(body.get("seed", 0)),
                )
                with state.lock:
                    out = state.gen.generate([body["messages"]], params)[0][0]
                    state.in_flight -= 1
                resp = {
                    "id": f"cmpl-{state.requests}",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": out.text},
                            "finish_reason": out.finish_reason,
                        }
                    ],
                    "usage": {"completion_tokens": out.num_tokens},
                }
                data = json.dumps(resp).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def stop(self) -> None:
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path):
    s = ModelServer(tiny_model_dir)
    url = s.start()
    yield url, s
    s.stop()


@pytest.fixture()
def fresh(served):
    url, s = served
    deadline = time.time() + 10
    while s.active and time.time() < deadline:  # let stalled requests of an earlier test finish
        time.sleep(0.05)
    s.fail, s.stall_s, s.hold_s, s.requests, s.max_in_flight = [], 0.0, 0.0, 0, 0
    return url, s


CONV = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Name a fruit."}]]


def test_real_model_generation_matches_local_backend(fresh, tmp_path, tiny_model_dir):
    from evarl.generation.hf import HFGenerator

    url, s = fresh
    client = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api")
    p = SamplingParams(n=2, temperature=0.0, max_new_tokens=6, seed=0)
    out = client.generate(CONV, p)
    assert len(out) == 2 and all(len(r) == 2 for r in out)
    local = HFGenerator.from_path(str(tiny_model_dir)).generate(
        CONV[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    )
    assert out[0][0].text == local[0][0].text  # greedy: the served text is the model's text
    assert out[0][0].num_tokens > 0 and out[0][0].finish_reason in ("stop", "length")
    assert s.requests == 4


def test_retries_after_429_and_500(fresh, tmp_path):
    url, s = fresh
    s.fail = [429, 500, 502]
    client = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api", max_retries=4)
    out = client.generate(CONV[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))
    assert out[0][0].finish_reason != "error"
    assert s.requests == 4 and client.stats["retries"] == 3


def test_cache_hit_makes_no_request(fresh, tmp_path):
    url, s = fresh
    p = SamplingParams(n=1, temperature=1.0, max_new_tokens=5, seed=7)
    a = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api").generate(CONV, p)
    n = s.requests
    b_client = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api")
    b = b_client.generate(CONV, p)
    assert s.requests == n and b_client.stats["cache_hits"] == 2
    assert [r[0].text for r in a] == [r[0].text for r in b]


def test_timeout_is_retried_then_reported(fresh, tmp_path):
    url, s = fresh
    s.stall_s = 1.5
    client = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api", timeout_s=0.3, max_retries=1)
    t0 = time.time()
    with pytest.raises(EndpointError, match="timed out after 0.3s .gave up after 2 attempts"):
        client.generate(CONV[:1], SamplingParams(n=1, max_new_tokens=4))
    # two 0.3 s attempts and one backoff (<= 0.5 s); waiting for the stalled server would take >= 3 s
    assert time.time() - t0 < 2.5
    soft = OpenAIGenerator(
        url, "tiny", cache_dir=tmp_path / "api", timeout_s=0.3, max_retries=0, raise_on_error=False
    )
    assert soft.generate(CONV[:1], SamplingParams(n=1, max_new_tokens=4))[0][0].finish_reason == "error"


def test_concurrency_limit_is_respected(fresh, tmp_path):
    url, s = fresh
    s.hold_s = 0.3
    convs = [[{"role": "user", "content": f"Say {i}."}] for i in range(6)]
    client = OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api", concurrency=3)
    out = client.generate(convs, SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    assert len(out) == 6
    assert 2 <= s.max_in_flight <= 3
    s.max_in_flight = 0
    OpenAIGenerator(url, "tiny", cache_dir=tmp_path / "api2", concurrency=1).generate(
        convs[:3], SamplingParams(n=1, temperature=0.0, max_new_tokens=2)
    )
    assert s.max_in_flight == 1


def test_teacher_judge_through_the_endpoint(fresh, tmp_path, monkeypatch):
    """A judge with options.endpoint uses the client; a random tiny model's output does not parse -> failed."""
    from evarl.config import RewardSourceConfig
    from evarl.rewards.judge import JudgeReward
    from evarl.types import Prompt

    monkeypatch.setenv("EVARL_CACHE", str(tmp_path))
    url, s = fresh
    cfg = RewardSourceConfig(
        name="judge", samples=2, options={"endpoint": url, "endpoint_model": "tiny", "max_new_tokens": 8}
    )
    judge = JudgeReward.from_config(cfg)
    res = judge.score([Prompt(id="p", messages=CONV[0])], ["Blue."])
    assert s.requests == 2 and judge.role == "teacher"
    r = res[0]
    assert len(r.info["raw"]) == 2
    assert r.failed == (r.info["parse_failures"] == 2)
    assert (tmp_path / "api").exists()
