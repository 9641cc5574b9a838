"""vLLM generation backend (optional extra ``evarl[vllm]``, imported lazily; CUDA machines).

NOT RUN ON A GPU. vLLM cannot be installed on the CPU machines this project is built on, so this module has
only been exercised against a stand-in ``vllm`` module with vLLM's API surface (``tests/unit/test_vllm_backend.py``,
``tests/unit/test_weight_sync.py``). What those tests check: the exact engine arguments built from a config,
token-id prompts (one BOS with a Gemma-style template that writes ``<bos>`` itself, equal to the trainer's
tokenisation), per-prompt seeds, end-of-turn stop ids, output parsing, the release/wake sequence around
training, that a weight sync pushes every named tensor and resets the prefix cache, and the sampler/trainer
log-prob gap. The vLLM calls were checked against vLLM's documentation and source (``LLM.__init__`` keyword
arguments, ``LLM.generate`` with ``{"prompt_token_ids": ...}`` prompts and one ``SamplingParams`` per prompt,
``LLM.sleep(level)`` / ``LLM.wake_up(tags)``, ``LLM.reset_prefix_cache()``, ``LLM.apply_model`` /
``LLM.collective_rpc``), not against a running engine.

Engine. :func:`engine_kwargs` maps the config to ``vllm.LLM(...)``: model and tokenizer = the checkpoint
directory, ``dtype`` = ``generation.dtype`` or ``model.dtype``, ``trust_remote_code`` = ``model.trust_remote_code``,
``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``enable_prefix_caching`` and
``seed`` (= ``generation.vllm_seed``) from ``generation.*``, and ``enable_sleep_mode=True``.

Prompts. Each conversation is rendered once with the policy's own Hugging Face tokenizer and chat template and
tokenised without adding special tokens (:func:`evarl.truncation.encode_prompt`, the very ids the trainer
puts in front of a response), then handed to vLLM as ``{"prompt_token_ids": ids}``. vLLM never sees text, so a
template that writes ``<bos>`` itself (Gemma) gets exactly one BOS, and sampler and trainer condition on the
same ids. Generation stops on the tokenizer's EOS and the template's end-of-turn token
(:func:`evarl.chat.end_of_turn_id`, e.g. Gemma's ``<end_of_turn>``). Prompt i of a call is seeded with
``params.seed * 1_000_003 + i``, so a resumed stage repeats its chunks (vLLM's per-request seeded sampling).

Memory around training (offline loop). :meth:`VLLMGenerator.release` puts the engine to sleep (level 2: weights
and KV cache dropped, since the next wake brings a new checkpoint; ``keep_weights=True`` gives level 1, weights
kept in CPU memory) or, without sleep mode, deletes it and frees the CUDA cache. :meth:`VLLMGenerator.wake`
wakes the weights, loads the new checkpoint's safetensors into the running engine (``model.load_weights`` in
every worker through ``LLM.apply_model``), wakes the KV cache and resets the prefix cache; if the engine was
deleted, or the checkpoint cannot be streamed in, it builds a new engine from the checkpoint directory.

Online weight sync. :meth:`VLLMGenerator.sync_weights` pushes the trainer's named tensors (Hugging Face names,
unwrapped, LoRA merged) into the engine in ~1 GiB buckets through the same ``load_weights`` path, then resets the
prefix cache (cached KV blocks were computed with the old weights). :meth:`VLLMGenerator.token_logps` scores
given sequences under the engine (``prompt_logprobs``), which :mod:`evarl.generation.sync` compares with the
trainer after each sync. Callables cross vLLM's process boundary by pickling, which vLLM only allows with
``VLLM_ALLOW_INSECURE_SERIALIZATION=1``; the engine is built with that set (our own local worker processes).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from evarl.chat import end_of_turn_id
from evarl.generation.base import GenOutput, SamplingParams
from evarl.registry import BACKENDS
from evarl.truncation import encode_prompt

log = logging.getLogger(__name__)

# bytes of tensors per load_weights call during a weight sync / checkpoint load
SYNC_BUCKET_BYTES = 1 << 30
SEED_STRIDE = 1_000_003


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "generation.backend=vllm needs the vllm extra: pip install 'evarl[vllm]' (CUDA only)"
        ) from e
    return vllm


def engine_kwargs(cfg: Any, model_path: str) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for a run config and a checkpoint directory."""
    g = cfg.generation
    return {
        "model": model_path,
        "tokenizer": model_path,
        "dtype": g.dtype or cfg.model.dtype,
        "trust_remote_code": cfg.model.trust_remote_code,
        "tensor_parallel_size": g.tensor_parallel_size,
        "gpu_memory_utilization": g.gpu_memory_utilization,
        "max_model_len": g.max_model_len,
        "enable_prefix_caching": g.enable_prefix_caching,
        "seed": g.vllm_seed,
        "enable_sleep_mode": True,
    }


def _load_into(model: Any, weights: list[tuple[str, Any]]) -> int:
    """Runs inside each vLLM worker (``LLM.apply_model``): load Hugging Face-named tensors, sharded by the
    model's own weight loaders for tensor parallelism."""
    model.load_weights(weights=weights)
    return len(weights)


def _load_into_worker(worker: Any, weights: list[tuple[str, Any]]) -> int:
    """The same through ``LLM.collective_rpc`` for vLLM versions without ``LLM.apply_model``."""
    return _load_into(worker.get_model(), weights)


def _buckets(named: Iterable[tuple[str, Any]], limit: int) -> Iterator[list[tuple[str, Any]]]:
    bucket: list[tuple[str, Any]] = []
    size = 0
    for name, t in named:
        t = t.detach().to("cpu")  # plain CPU tensors cross vLLM's process boundary
        bucket.append((name, t))
        size += t.numel() * t.element_size()
        if size >= limit:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def _safetensors_tensors(path: str) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt", device="cpu") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open has keys(), no __iter__)
                yield name, st.get_tensor(name)


def _free_cuda() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 (freeing memory must never fail a run)
        pass


@BACKENDS.register("vllm")
class VLLMGenerator:
    """vLLM offline engine: token-id prompts, n samples per prompt, seeded; sleeps during training."""

    name = "vllm"

    def __init__(
        self,
        path: str,
        engine_args: dict[str, Any] | None = None,
        tokenizer: Any = None,
        max_prompt_tokens: int = 1024,
        return_logprobs: bool = False,
    ) -> None:
        self.path = str(path)
        self.engine_args = dict(engine_args or {"model": self.path, "tokenizer": self.path})
        self.max_prompt_tokens = max_prompt_tokens
        self.return_logprobs = return_logprobs
        if tokenizer is None:
            from evarl.models.loading import load_tokenizer

            tokenizer = load_tokenizer(self.path, bool(self.engine_args.get("trust_remote_code", False)))
        self.tokenizer = tokenizer  # the policy's own HF tokenizer: the chat template is rendered with it
        self.llm: Any = None
        self.asleep: int | None = None  # sleep level while asleep
        self._build()

    @classmethod
    def from_config(cls, cfg: Any, model_path: str) -> VLLMGenerator:
        return cls(model_path, engine_kwargs(cfg, model_path))

    # ------------------------------------------------------------------ engine life cycle

    @property
    def sleep_mode(self) -> bool:
        return bool(self.engine_args.get("enable_sleep_mode", False))

    def _build(self) -> None:
        # our weight-loading callables travel to vLLM's own worker processes by pickle (module docstring)
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        args = {**self.engine_args, "model": self.path, "tokenizer": self.path}
        self.engine_args = args
        self.llm = _vllm().LLM(**args)
        self.asleep = None

    def _delete(self) -> None:
        self.llm = None
        self.asleep = None
        try:  # tear down vLLM's process groups so the next engine (or the trainer) starts clean
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001 (older/newer vLLM, or the stand-in: plain deletion is enough)
            pass
        _free_cuda()

    def release(self, keep_weights: bool = False) -> None:
        """Give the GPU back before training: sleep level 2 (level 1 with ``keep_weights``: the same weights
        come back from CPU memory) when sleep mode is on, else delete the engine and free the CUDA cache."""
        if self.llm is None or self.asleep is not None:
            return
        if self.sleep_mode:
            level = 1 if keep_weights else 2
            try:
                self.llm.sleep(level=level)
                self.asleep = level
                _free_cuda()
                return
            except Exception as e:  # noqa: BLE001 (sleep mode unsupported on this platform / version)
                log.warning("vLLM sleep(level=%d) failed (%s); deleting the engine instead", level, e)
        self._delete()

    def wake(self, path: str | None = None) -> None:
        """Resume after training on ``path`` (None = the weights before :meth:`release`). A new path is loaded
        into the running engine; a deleted engine is rebuilt from the path."""
        new = path is not None and str(path) != self.path
        target = str(path) if path is not None else self.path
        if self.llm is None:
            self.path = target
            self._build()
            return
        if self.asleep is None and not new:
            return
        if self.asleep == 1 and not new:
            self.llm.wake_up()
            self.asleep = None
            return
        # new weights (or level-2 sleep, which dropped them): wake the weights alone, load, then the KV cache,
        # so the KV cache is not allocated while two copies of the weights could be resident
        if self.asleep is not None:
            self.llm.wake_up(tags=["weights"])
        try:
            n = self._push(_safetensors_tensors(target))
        except Exception as e:  # noqa: BLE001 (no in-place loading in this vLLM: rebuild)
            log.warning("loading %s into the vLLM engine failed (%s); rebuilding the engine", target, e)
            n = 0
        if n == 0:
            self._delete()
            self.path = target
            self._build()
            return
        if self.asleep is not None:
            self.llm.wake_up(tags=["kv_cache"])
        self.asleep = None
        self.path = target
        self._reset_prefix_cache()

    def reload(self, path: str) -> None:
        """A new checkpoint in place of the current weights (release + wake)."""
        self.release()
        self.wake(path)

    # ------------------------------------------------------------------ weights

    def _push(self, named: Iterable[tuple[str, Any]]) -> int:
        """Load named tensors into every worker's model; the number of tensors loaded."""
        n = 0
        for bucket in _buckets(named, SYNC_BUCKET_BYTES):
            if hasattr(self.llm, "apply_model"):
                self.llm.apply_model(partial(_load_into, weights=bucket))
            else:
                self.llm.collective_rpc(_load_into_worker, args=(bucket,))
            n += len(bucket)
        return n

    def _reset_prefix_cache(self) -> None:
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def sync_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> int:
        """Push the trainer's current weights into the engine (online training, after each optimizer step).

        ``named_tensors``: Hugging Face parameter names and tensors of the unwrapped model (no ``module.``
        prefix, LoRA merged), e.g. ``engine.unwrap().named_parameters()``; any device and dtype (they are
        copied to CPU in buckets and cast by vLLM's loaders). Resets the prefix cache. Returns the count.
        """
        if self.llm is None or self.asleep is not None:
            self.wake()
        n = self._push(named_tensors)
        self._reset_prefix_cache()
        return n

    # ------------------------------------------------------------------ sampling

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id, end_of_turn_id(self.tokenizer)}
        return sorted(int(i) for i in ids if i is not None)

    def prompt_budget(self, max_new_tokens: int) -> int:
        limit = self.engine_args.get("max_model_len")
        budget = self.max_prompt_tokens
        if limit:
            budget = min(budget, int(limit) - max_new_tokens)
        return max(1, budget)

    def encode(self, conversations: list[list[dict[str, str]]], max_new_tokens: int = 0) -> list[list[int]]:
        """Prompt token ids: the chat template rendered once with the policy's tokenizer, no special tokens
        added, fitted to the prompt budget by the one truncation policy (the trainer's
        :func:`~evarl.truncation.encode_prompt`: oldest turns first, template and generation header kept)."""
        budget = self.prompt_budget(max_new_tokens)
        return [list(encode_prompt(self.tokenizer, c, budget)) for c in conversations]

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        if self.llm is None or self.asleep is not None:
            self.wake()
        vllm = _vllm()
        stop = self._stop_ids()
        greedy = params.temperature <= 0
        sps = []
        for i in range(len(conversations)):
            kw: dict[str, Any] = dict(
                n=params.n,
                temperature=0.0 if greedy else params.temperature,
                top_p=1.0 if greedy else params.top_p,
                max_tokens=params.max_new_tokens,
                seed=(params.seed * SEED_STRIDE + i) % (1 << 63),
                stop_token_ids=stop,
            )
            if self.return_logprobs:
                kw["logprobs"] = 0  # the sampled token's log-prob only
            sps.append(vllm.SamplingParams(**kw))
        prompts = [{"prompt_token_ids": ids} for ids in self.encode(conversations, params.max_new_tokens)]
        outs = self.llm.generate(prompts, sps, use_tqdm=False)
        stop_set = set(stop)
        rows: list[list[GenOutput]] = []
        for o in outs:
            row = []
            for c in o.outputs:
                ids = [int(t) for t in c.token_ids]
                finish = "length" if c.finish_reason == "length" else "stop"
                n_tok = len(ids) - 1 if finish == "stop" and ids and ids[-1] in stop_set else len(ids)
                lps = None
                if self.return_logprobs and getattr(c, "logprobs", None) is not None:
                    lps = [_logprob_of(d, t) for d, t in zip(c.logprobs, ids)]
                row.append(GenOutput(c.text.strip(), n_tok, finish, ids, lps))
            rows.append(row)
        return rows

    def token_logps(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[list[float]]:
        """log p(y_t | x, y_<t) of the given response tokens under the engine's current weights (vLLM
        ``prompt_logprobs`` over prompt + response, temperature 1, one token generated and ignored)."""
        if self.llm is None or self.asleep is not None:
            self.wake()
        vllm = _vllm()
        sp = vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": list(p) + list(r)} for p, r in zip(prompt_ids, response_ids)]
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        result = []
        for o, p, r in zip(outs, prompt_ids, response_ids):
            plp = o.prompt_logprobs  # position 0 is None (nothing predicts the first token)
            result.append([_logprob_of(plp[len(p) + k], t) for k, t in enumerate(r)])
        return result


def _logprob_of(entry: Any, token: int) -> float:
    """The log-prob of ``token`` in one position of vLLM's logprobs ({token id: Logprob(logprob=...)})."""
    v = entry[token]
    return float(getattr(v, "logprob", v))
