"""Generation through any OpenAI-compatible chat-completions endpoint (vLLM, `transformers serve`, TGI, APIs).

Implements the `Generator` protocol with the standard library only (urllib + threads):

- one POST `{endpoint}/chat/completions` per sample (many servers ignore `n`), at most `concurrency` in
  flight (a thread pool);
- a per-request timeout; retries with exponential backoff and jitter on 408/409/429/5xx and connection
  errors, honouring `Retry-After` (as the OpenAI SDK does); other 4xx fail at once with the server's message;
- an on-disk cache keyed by sha256 of (model, messages, temperature, top_p, max_tokens, seed) under
  `evarl.models.loading.cache_dir()/"api"`, so a resumed stage never pays twice and a rerun reproduces the
  same samples (judge APIs are not deterministic: alpaca_eval caches the same way). Only successes are cached;
- the API key only from the environment variable named in the config (`api_key_env`), never from a file or
  the config itself; a missing variable sends no Authorization header (local servers).

Sample j of a conversation is requested with seed `params.seed * 1000 + j`, so results depend only on the
conversation, the params and the position (the Generator contract). With `raise_on_error=False` a request
that still fails after the retries returns `GenOutput("", 0, "error")` instead of raising; reward sources use
this to fail the item instead of stopping the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evarl.generation.base import GenOutput, SamplingParams
from evarl.registry import BACKENDS

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    """A chat-completions request that failed for good (non-retryable status or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def cache_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): Retry-After if given, else base*2^attempt + jitter."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, max_s)
    d = base_s * (2**attempt)
    return min(max_s, d * (1.0 + 0.25 * random.random()))


@BACKENDS.register("openai")
class OpenAIGenerator:
    """OpenAI-compatible /v1/chat/completions: concurrency limit, timeouts, retries with backoff, disk cache."""

    name = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        raise_on_error: bool = True,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"openai endpoint must be an http(s) URL like http://127.0.0.1:8000/v1, got {endpoint!r}"
            )
        if concurrency < 1:
            raise ValueError(f"openai concurrency must be >= 1, got {concurrency}")
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        if cache_dir is None:
            from evarl.models.loading import cache_dir as _root

            cache_dir = _root() / "api"
        self.cache_dir = Path(cache_dir)
        self.use_cache = use_cache
        self.raise_on_error = raise_on_error
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "errors": 0}

    @classmethod
    def from_config(cls, gen_cfg: Any, cache_dir: str | Path | None = None) -> OpenAIGenerator:
        """From `GenerationConfig` (endpoint, endpoint_model, api_key_env, concurrency, timeout_s)."""
        if not gen_cfg.endpoint or not gen_cfg.endpoint_model:
            raise ValueError(
                "generation.endpoint and generation.endpoint_model are required for backend 'openai'"
            )
        return cls(
            gen_cfg.endpoint,
            gen_cfg.endpoint_model,
            api_key_env=gen_cfg.api_key_env,
            concurrency=gen_cfg.concurrency,
            timeout_s=gen_cfg.timeout_s,
            cache_dir=cache_dir,
        )

    # ------------------------------------------------------------------ protocol

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        jobs = [(i, j) for i in range(len(conversations)) for j in range(params.n)]
        out: list[list[GenOutput | None]] = [[None] * params.n for _ in conversations]

        def run(job: tuple[int, int]) -> None:
            i, j = job
            out[i][j] = self._sample(conversations[i], params, j)

        if len(jobs) == 1 or self.concurrency == 1:
            for job in jobs:
                run(job)
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs))) as pool:
                for f in [pool.submit(run, job) for job in jobs]:
                    f.result()  # re-raises the first EndpointError
        return [[o for o in row if o is not None] for row in out]

    # ------------------------------------------------------------------ internals

    def _body(self, messages: list[dict[str, str]], params: SamplingParams, j: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": params.seed * 1000 + j,
        }
        if params.temperature > 0:
            body["top_p"] = params.top_p
        return body

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _sample(self, messages: list[dict[str, str]], params: SamplingParams, j: int) -> GenOutput:
        body = self._body(messages, params, j)
        key = cache_key(
            self.model, messages, {k: v for k, v in body.items() if k not in ("model", "messages")}
        )
        path = self._cache_path(key)
        if self.use_cache and path.exists():
            try:
                d = json.loads(path.read_text())
                with self._lock:
                    self.stats["cache_hits"] += 1
                return GenOutput(d["text"], int(d["num_tokens"]), d["finish_reason"])
            except (OSError, ValueError, KeyError):
                pass  # a corrupt cache entry is refetched and overwritten
        try:
            resp = self._post(body)
        except EndpointError:
            with self._lock:
                self.stats["errors"] += 1
            if self.raise_on_error:
                raise
            return GenOutput("", 0, "error")
        out = parse_response(resp)
        if self.use_cache:
            _atomic_write(path, json.dumps({"text": out.text, "num_tokens": out.num_tokens,
                                            "finish_reason": out.finish_reason}))  # fmt: skip
        return out

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.stats["requests"] += 1
                if attempt:
                    self.stats["retries"] += 1
            retry_after: float | None = None
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                msg = e.read().decode("utf-8", "replace")[:500]
                last = f"HTTP {e.code} from {self.url}: {msg}"
                if e.code not in RETRY_STATUS:
                    raise EndpointError(last, e.code) from e
                ra = e.headers.get("Retry-After") if e.headers else None
                try:
                    retry_after = float(ra) if ra is not None else None
                except ValueError:
                    retry_after = None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"request to {self.url} failed: {reason!r} (timeout {self.timeout_s}s)"
            except ValueError as e:  # body that is not JSON
                raise EndpointError(f"{self.url}: response is not JSON ({e})") from e
            if attempt < self.max_retries:
                time.sleep(backoff_delay(attempt, self.backoff_s, self.max_backoff_s, retry_after))
        raise EndpointError(f"{last} (gave up after {self.max_retries + 1} attempts)")


def parse_response(resp: dict[str, Any]) -> GenOutput:
    """GenOutput from a chat-completions JSON body (choices[0].message.content, finish_reason, usage)."""
    try:
        choice = resp["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise EndpointError(f"malformed chat-completions response: {json.dumps(resp)[:300]}") from e
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    usage = resp.get("usage") or {}
    n_tok = int(usage.get("completion_tokens") or 0)
    return GenOutput(text.strip(), n_tok, finish)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
