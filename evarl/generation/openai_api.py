"""Generation through any OpenAI-compatible chat-completions endpoint (vLLM, `transformers serve`, TGI, APIs).

Implements the `Generator` protocol on the official ``openai`` client (imported when the first generator is
built), which owns the transport: per-request timeouts, retries with exponential backoff and jitter on
408/409/429/5xx, timeouts and connection errors, honouring ``Retry-After`` / ``retry-after-ms``, and typed
errors. Around it:

- one ``POST {endpoint}/chat/completions`` per sample (many servers ignore ``n``), at most ``concurrency`` in
  flight (a thread pool); sample j of a conversation is requested with seed ``params.seed * 1000 + j``, so
  results depend only on the conversation, the params and the position (the Generator contract);
- an on-disk cache keyed by sha256 of (endpoint URL, model, messages, temperature, top_p, max_tokens, seed)
  under ``evarl.models.loading.cache_dir()/"api"``, so a resumed stage never pays twice and a rerun reproduces
  the same samples (judge APIs are not deterministic: alpaca_eval caches the same way); two servers serving a
  model under the same name never share entries. Only successes are cached, and an entry holds the text, the
  token count and the finish reason, nothing else;
- secrets (:mod:`evarl.endpoints`): the key comes only from the environment variable named by ``api_key_env``
  and is sent only over https or to a loopback host; it is never logged, cached or put in an error message
  (server messages are redacted). With the variable unset no ``Authorization`` header is sent (local servers),
  and the ``openai`` package's own ``OPENAI_API_KEY`` fallback is switched off, so a key set for one endpoint
  never travels to another;
- errors: a request that still fails after the retries raises :class:`~evarl.errors.EndpointError` (the CLI
  reports it in one line, exit 2). With ``raise_on_error=False`` a failure that concerns one request (timeout,
  5xx, 429, a 400 for that input, a malformed body) returns ``GenOutput("", 0, "error")`` instead, and the last
  message is kept in ``last_error``; reward sources use this to fail the item instead of stopping the run.
  Failures that concern the whole endpoint (connection refused or unreachable, 401, 403, 404 such as a wrong
  model name) always raise, and the remaining requests of the call are cancelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from evarl.endpoints import DEFAULT_API_KEY_ENV, endpoint_problem, read_api_key, redact
from evarl.errors import EndpointError
from evarl.generation.base import GenOutput, SamplingParams
from evarl.registry import BACKENDS

# statuses that say the endpoint as a whole is unusable (bad key, no permission, unknown model or path)
FATAL_STATUS = {401, 403, 404}

__all__ = ["FATAL_STATUS", "EndpointError", "OpenAIGenerator", "cache_key", "parse_response"]


def cache_key(endpoint: str, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    """sha256 of everything that determines a response: the endpoint URL, the model name, the messages and the
    sampling parameters (never the API key)."""
    blob = json.dumps(
        {"endpoint": endpoint, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _import_openai() -> Any:
    try:
        import openai
    except (
        ModuleNotFoundError
    ) as e:  # pragma: no cover (a dependency of evarl; only a broken install lacks it)
        raise EndpointError(
            "the OpenAI-compatible client needs the `openai` package: pip install 'openai>=1.40'"
        ) from e
    return openai


@BACKENDS.register("openai")
class OpenAIGenerator:
    """OpenAI-compatible /v1/chat/completions on the ``openai`` client: concurrency limit, timeouts, retries,
    disk cache, key only from the environment and only over https or to loopback."""

    name = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        raise_on_error: bool = True,
    ) -> None:
        problem = endpoint_problem(endpoint, api_key_env)
        if problem:
            raise EndpointError(problem)
        if concurrency < 1:
            raise EndpointError(f"endpoint {endpoint}: concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0 or max_retries < 0:
            raise EndpointError(
                f"endpoint {endpoint}: timeout_s must be > 0 and max_retries >= 0, got {timeout_s}, {max_retries}"
            )
        self.base_url = endpoint.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        if cache_dir is None:
            from evarl.models.loading import cache_dir as evarl_cache_dir

            cache_dir = evarl_cache_dir() / "api"
        self.cache_dir = Path(cache_dir)
        self.use_cache = use_cache
        self.raise_on_error = raise_on_error
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_key: str | None = None
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "errors": 0}

    def __repr__(self) -> str:  # never shows the key (it is not an attribute anyway)
        return f"OpenAIGenerator({self.base_url!r}, {self.model!r}, api_key_env={self.api_key_env!r})"

    @classmethod
    def from_config(cls, gen_cfg: Any, cache_dir: str | Path | None = None) -> OpenAIGenerator:
        """From `GenerationConfig` (endpoint, endpoint_model, api_key_env, concurrency, timeout_s)."""
        if not gen_cfg.endpoint or not gen_cfg.endpoint_model:
            raise EndpointError(
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
        elif jobs:
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)))
            futures = [pool.submit(run, job) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            # on a failure the queued requests are cancelled (an unreachable endpoint fails once, not per item)
            pool.shutdown(wait=True, cancel_futures=failed is not None)
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
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
            self.base_url,
            self.model,
            messages,
            {k: v for k, v in body.items() if k not in ("model", "messages")},
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
            out = parse_response(self._post(body), self.url)
        except EndpointError as e:
            with self._lock:
                self.stats["errors"] += 1
                self.last_error = str(e)
            if self.raise_on_error or e.fatal or e.status in FATAL_STATUS:
                raise
            return GenOutput("", 0, "error")
        if self.use_cache:
            _atomic_write(path, json.dumps({"text": out.text, "num_tokens": out.num_tokens,
                                            "finish_reason": out.finish_reason}))  # fmt: skip
        return out

    def _openai_client(self, key: str | None) -> Any:
        """One client per key (rebuilt if the environment variable changed); thread-safe, shared by the pool."""
        openai = _import_openai()
        fingerprint = hashlib.sha256((key or "").encode()).hexdigest()  # the key itself is not kept here
        with self._lock:
            if self._client is None or self._client_key != fingerprint:
                # never None: the package would fall back to $OPENAI_API_KEY itself. Without a key a placeholder
                # satisfies its constructor and every request omits the Authorization header (see _post)
                self._client = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=key or "no-key",
                    timeout=self.timeout_s,
                    max_retries=self.max_retries,
                )
                self._client_key = fingerprint
            return self._client

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion through the ``openai`` client (its retries); the JSON body as a dict."""
        openai = _import_openai()
        key = read_api_key(self.api_key_env)
        problem = endpoint_problem(self.base_url, self.api_key_env)  # the variable may have been set since
        if problem:
            raise EndpointError(problem, fatal=True)
        client = self._openai_client(key)
        extra: dict[str, Any] = {} if key else {"extra_headers": {"Authorization": openai.Omit()}}
        attempts = f"gave up after {self.max_retries + 1} attempts"
        try:
            raw = client.chat.completions.with_raw_response.create(**body, **extra)
        except openai.APITimeoutError as e:
            self._count(1 + self.max_retries, self.max_retries)
            raise EndpointError(
                f"request to {self.url} timed out after {self.timeout_s}s ({attempts})"
            ) from e
        except openai.APIConnectionError as e:
            self._count(1 + self.max_retries, self.max_retries)
            cause = redact(str(e.__cause__ or e), key)
            raise EndpointError(f"cannot reach {self.url}: {cause} ({attempts})", fatal=True) from e
        except openai.APIStatusError as e:
            status = int(e.status_code)
            retryable = status in (408, 409, 429) or status >= 500
            self._count(1 + self.max_retries if retryable else 1, self.max_retries if retryable else 0)
            msg = redact(str(getattr(e, "message", "") or e), key)[:500]
            hint = f" (is {body['model']!r} the name the server serves?)" if status == 404 else ""
            tail = f" ({attempts})" if retryable else ""
            raise EndpointError(f"HTTP {status} from {self.url}: {msg}{hint}{tail}", status) from e
        except openai.OpenAIError as e:
            self._count(1, 0)
            raise EndpointError(f"request to {self.url} failed: {redact(str(e), key)}") from e
        retries = int(getattr(raw, "retries_taken", 0) or 0)
        self._count(1 + retries, retries)
        try:
            data = raw.http_response.json()
        except ValueError as e:
            text = redact(raw.http_response.text[:200], key)
            raise EndpointError(f"{self.url}: response is not JSON: {text!r}") from e
        if not isinstance(data, dict):
            raise EndpointError(f"{self.url}: response is not a JSON object: {json.dumps(data)[:200]}")
        return data

    def _count(self, requests: int, retries: int) -> None:
        with self._lock:
            self.stats["requests"] += requests
            self.stats["retries"] += retries


def parse_response(resp: dict[str, Any], url: str = "endpoint") -> GenOutput:
    """GenOutput from a chat-completions JSON body (choices[0].message.content, finish_reason, usage)."""
    try:
        choice = resp["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("content is not a string")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise EndpointError(f"{url}: malformed chat-completions response: {json.dumps(resp)[:300]}") from e
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    usage = resp.get("usage") or {}
    try:
        n_tok = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError, AttributeError):
        n_tok = 0
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
