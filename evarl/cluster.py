"""Ray as the engine past one machine: generation, scoring and evaluation on N actors holding model replicas.

With ``cluster.ray: true`` (start or join a local Ray cluster) or an address (``auto``, ``ray://host:10001``),
a :class:`RayPool` starts ``cluster.actors`` Ray actors, each asking for ``cluster.actor_cpus`` CPUs and
``cluster.actor_gpus`` GPUs. Every actor builds its replica from the run's config and the policy path, exactly
as a single process does: the generator is :func:`evarl.generation.factory.make_generator` (hf or vLLM, on the
actor's device) and the reward is :func:`evarl.rewards.build_reward` with the actor's own generator as the self-judge
and its tokenizer for token lengths (the loop's ``reward_for``). Actors reload when the policy path changes
and keep a policy-independent reward (a classifier RM, a verifier) across rounds.

How a stage reaches the actors. The work is cut by :mod:`evarl.dist`'s layer, not a second one:

- :meth:`RayGenerator.generate` cuts the conversations with ``dist.chunked(convs, chunk_prompts)`` and gives
  chunk c ``dist.chunk_seed(params.seed, c)``, exactly as :class:`evarl.generation.sharded.ShardedGenerator`
  does over torch processes;
- :meth:`RayGenerator.generate_chunks` takes chunks already cut and seeded by the caller (``generate_stage``
  seeds its chunks itself) and hands every finished chunk to ``on_done`` (in completion order) so the stage
  can append it to its partial file;
- :meth:`RayReward.score` groups consecutive items of one prompt and puts ``chunk_prompts`` groups in a chunk,
  exactly as :class:`evarl.rewards.sharded.ShardedReward` does, so a judge sees a prompt's siblings together.

Chunks go to whichever actor is free (``ray.wait``) and are gathered in chunk (= prompt, = item) order. A chunk's
content and seed never depend on the actor that computes it, and inside an actor a chunk runs in the shard
scope of :mod:`evarl.dist` (a self-judge's nested generation runs locally, as inside a rank's chunk), so the
results equal the single-process path's. One caveat is torch's: float reductions depend on the thread count,
so bit-equal samples need the same number of torch threads (``cluster.actor_cpus`` vs the run's ``threads``).

Failure and resume. An actor that dies mid-stage (killed, out of memory, node lost: Ray's ``RayActorError``)
fails the stage with a ``RuntimeError`` naming the actor and the chunk. No new chunk is started after a death,
but the chunks already running on the other actors are waited for and handed to ``on_done``, so everything
finished is kept: ``generate_stage`` resumes from its partial file when the same command is rerun. The pool
replaces dead actors at its next call, so a rerun in the same process works too. A Python error inside a chunk
is raised as Ray raises it (an instance of the original exception class), after the same draining.

``cluster.ray`` and a multi-process launch (``torchrun``, ``WORLD_SIZE > 1``) are two ways of spreading the same
chunks; they are refused together (:func:`cluster_problem`). Ray is an optional extra (``pip install
'evarl[ray]'``) and imported only when a pool starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from evarl.dist import chunk_seed, chunked, consecutive_groups, ray_problem
from evarl.errors import WorkerLost
from evarl.generation.base import GenOutput, SamplingParams
from evarl.types import Prompt, RewardResult

Conversation = list[dict[str, str]]


# ---------------------------------------------------------------- checks and messages


def cluster_problem(cfg: Any) -> str | None:
    """Why ``cfg.cluster`` cannot be used by this process (None when it can); see :func:`evarl.dist.ray_problem`."""
    return ray_problem(cfg.cluster.ray)


def actor_died_message(k: int, c: int, n: int, what: str, kept: int | None, cause: str = "") -> str:
    """The error of a stage whose actor ``k`` died while computing chunk ``c`` of ``n``.

    ``kept`` is the number of finished chunks handed to the stage's ``on_done`` (None: the caller keeps no
    partial results, so its stage is redone as a whole)."""
    why = f" ({cause})" if cause else ""
    if kept is None:
        tail = "earlier stages are kept, rerun the same command to resume from this stage"
    else:
        tail = f"finished chunks are kept ({kept} of {n}), rerun the same command to resume"
    return f"Ray actor {k} died while {what} chunk {c} of {n}{why}; {tail}"


def _short(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# ---------------------------------------------------------------- the replica inside an actor


def _self_judge(cfg: Any) -> bool:
    return any(s.name in ("judge", "pairwise") and s.model in (None, "policy") for s in cfg.reward.sources)


class Replica:
    """One model replica: what a Ray actor of the pool holds (a plain class, usable in-process too)."""

    def __init__(self, cfg: Any, threads: int = 1, plugin_dir: str | None = None) -> None:
        import torch

        from evarl.registry import import_plugins

        if threads > 0:
            torch.set_num_threads(threads)
        # the config's `plugins:` modules register names (a reward source, an evolver) that this replica looks
        # up; an actor is a fresh process, so it imports them itself, searching the driver's working directory
        # as `evarl run` does (on a remote cluster the modules must be importable there: a package or
        # Ray's runtime_env)
        if plugin_dir and plugin_dir not in sys.path:
            sys.path.append(plugin_dir)
        import_plugins(cfg.plugins)
        # the actor builds the single-process path: a cfg with Ray on would make its generator a pool again
        self.cfg = replace(cfg, cluster=replace(cfg.cluster, ray=False))
        self.path: str | None = None
        self.gen: Any = None
        self.reward: Any = None
        self._reward_path: str | None = None

    def load(self, path: str) -> str:
        """Hold the generator of ``path`` (a no-op when it is held already); its name."""
        if path != self.path or self.gen is None:
            from evarl.dist import resolve_device
            from evarl.generation.factory import make_generator

            self.unload(keep_reward=True)
            self.gen = make_generator(self.cfg, path, resolve_device(self.cfg.device))
            self.path = path
        return str(self.gen.name)

    def unload(self, keep_reward: bool = False) -> None:
        """Free the generator (and a reward built on it) before training uses the memory."""
        self.gen = None
        if not keep_reward or self._reward_uses_policy():
            self.reward = None
            self._reward_path = None
        from evarl.dist import release_memory

        release_memory()

    def ping(self) -> int:
        return os.getpid()

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[list[GenOutput]]:
        from evarl.dist import shard_scope

        if self.gen is None:
            raise RuntimeError("replica: generate before load(path)")
        with shard_scope():  # one chunk: nested sharded calls run here, unsharded
            return self.gen.generate(conversations, params)

    def _reward_uses_policy(self) -> bool:
        from evarl.rewards.combine import needs_policy_tokenizer

        return _self_judge(self.cfg) or needs_policy_tokenizer(self.cfg.reward)

    def _ensure_reward(self) -> Any:
        from evarl.rewards.combine import needs_policy_tokenizer

        uses_policy = self._reward_uses_policy()
        if self.reward is None or (uses_policy and self._reward_path != self.path):
            from evarl.dist import resolve_device
            from evarl.rewards import build_reward

            if uses_policy and self.gen is None:
                raise RuntimeError("replica: this reward uses the policy; score after load(path)")
            self.reward = None
            tok = getattr(self.gen, "tokenizer", None) if needs_policy_tokenizer(self.cfg.reward) else None
            self.reward = build_reward(
                self.cfg.reward,
                policy=self.gen if _self_judge(self.cfg) else None,
                policy_tokenizer=tok,
                device=resolve_device(self.cfg.device),
            )
            self._reward_path = self.path
        return self.reward

    def reward_name(self) -> str:
        return str(getattr(self._ensure_reward(), "name", "reward"))

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        from evarl.dist import shard_scope

        reward = self._ensure_reward()
        with shard_scope():  # a self-judge generates inside this chunk, locally (as in a rank's chunk)
            return list(reward.score(prompts, responses))


# ---------------------------------------------------------------- the pool


class RayPool:
    """``cluster.actors`` Ray actors, each a :class:`Replica` of the run's models; see the module docstring.

    ``map`` is the one dispatcher: chunk payloads to free actors, results in chunk order. ``assignment`` records
    which actor computed each chunk of the last ``map`` (chunk -> actor index)."""

    def __init__(self, cfg: Any, path: str | None = None) -> None:
        problem = cluster_problem(cfg)
        if problem:
            raise RuntimeError(problem)
        if cfg.cluster.ray is False:
            raise ValueError("RayPool: cluster.ray is false")
        import ray

        self.cfg = cfg
        cl = cfg.cluster
        self._owns_ray = False
        if not ray.is_initialized():
            ray.init(**_init_kwargs(cl))
            self._owns_ray = True
        self._actor_cls = ray.remote(num_cpus=cl.actor_cpus, num_gpus=cl.actor_gpus)(Replica)
        self._threads = max(1, int(cl.actor_cpus))
        self.actors: list[Any] = [self._new_actor() for _ in range(cl.actors)]
        self._dead: set[int] = set()
        self.path: str | None = None
        self.gen_name: str | None = None
        self.assignment: dict[int, int] = {}
        if path is not None:
            self.load(path)

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self.cfg, self._threads, os.getcwd())

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, path: str) -> None:
        """Every actor holds the generator of ``path`` (a no-op on an actor that holds it already, so this is
        also the pool's health check). Dead actors are replaced: one that died between stages lost nothing."""
        import ray
        from ray.exceptions import RayActorError

        for k in sorted(self._dead):
            self.actors[k] = self._new_actor()
        self._dead.clear()
        refs = [a.load.remote(path) for a in self.actors]
        names: list[str] = []
        for k, ref in enumerate(refs):
            try:
                names.append(ray.get(ref))
                continue
            except RayActorError:
                self.actors[k] = self._new_actor()
            try:
                names.append(ray.get(self.actors[k].load.remote(path)))
            except RayActorError as e:
                self._dead.add(k)
                raise WorkerLost(
                    f"Ray actor {k} died while loading {path} ({_short(e)}); rerun the same command to resume"
                ) from e
        self.path = path
        self.gen_name = names[0] if names else None

    def release(self) -> None:
        """Free every actor's generator (before the driver trains); the next ``load`` rebuilds it."""
        import ray
        from ray.exceptions import RayActorError

        refs = {k: a.unload.remote() for k, a in enumerate(self.actors) if k not in self._dead}
        for k, ref in refs.items():
            try:
                ray.get(ref)
            except RayActorError:
                self._dead.add(k)  # replaced at the next load
        self.path = None

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on one live actor (e.g. a name)."""
        import ray

        k = next(k for k in range(len(self.actors)) if k not in self._dead)
        return ray.get(getattr(self.actors[k], method).remote(*args))

    def map(
        self,
        method: str,
        payloads: Sequence[tuple[Any, ...]],
        *,
        have: dict[int, Any] | None = None,
        on_done: Callable[[int, Any], None] | None = None,
        what: str = "computing",
        path: str | None = None,
    ) -> list[Any]:
        """``[actor.method(*payloads[c]) for c]`` over the actors, in chunk order.

        Chunks in ``have`` are not recomputed. Each chunk goes to the next free actor; ``on_done(c, result)`` is
        called for every newly finished chunk in completion order. An actor's death stops new dispatches, the
        chunks in flight elsewhere are still collected (and passed to ``on_done``), then a ``RuntimeError``
        (:func:`actor_died_message`) is raised."""
        import ray
        from ray.exceptions import RayActorError

        want = path or self.path
        if want is None:
            raise RuntimeError("RayPool: no model loaded (call load(path) first)")
        self.load(want)  # one cheap round trip when every actor holds it: replaces actors lost since
        results: dict[int, Any] = dict(have or {})
        todo = deque(c for c in range(len(payloads)) if c not in results)
        free = deque(range(len(self.actors)))
        inflight: dict[Any, tuple[int, int]] = {}
        self.assignment = {}
        died: tuple[int, int, BaseException] | None = None
        failed: BaseException | None = None
        while todo or inflight:
            while todo and free and died is None and failed is None:
                k, c = free.popleft(), todo.popleft()
                inflight[getattr(self.actors[k], method).remote(*payloads[c])] = (k, c)
                self.assignment[c] = k
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                k, c = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except RayActorError as e:
                    self._dead.add(k)
                    died = died or (k, c, e)
                    continue
                except Exception as e:  # a Python error inside the chunk: raised after the drain
                    failed = failed or e
                    free.append(k)
                    continue
                results[c] = res
                free.append(k)
                if on_done is not None:
                    on_done(c, res)
        if died is not None:
            k, c, e = died
            n_kept = len(results) if on_done is not None else None
            raise WorkerLost(actor_died_message(k, c, len(payloads), what, n_kept, _short(e))) from e
        if failed is not None:
            raise failed
        return [results[c] for c in range(len(payloads))]

    def close(self) -> None:
        """Kill the actors (and shut Ray down when this pool started it)."""
        try:
            import ray
        except ImportError:  # pragma: no cover
            return
        if not ray.is_initialized():
            return
        for a in self.actors:
            with contextlib.suppress(Exception):  # an actor already gone
                ray.kill(a)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()


def _init_kwargs(cl: Any) -> dict[str, Any]:
    """``ray.init`` arguments: a frugal local cluster for ``ray: true``, else join the given address."""
    kw: dict[str, Any] = {"ignore_reinit_error": True}
    address = None if cl.ray is True else str(cl.ray)
    if address is not None and address.startswith("ray://"):
        return {"address": address}  # Ray Client takes no local-cluster options
    kw.update(log_to_driver=False, logging_level=logging.WARNING)
    if address is not None or os.environ.get("RAY_ADDRESS"):
        if address is not None:
            kw["address"] = address
        return kw
    # a local cluster with exactly the CPUs the actors ask for, no dashboard, a small object store (the
    # chunks are text)
    kw.update(
        num_cpus=max(1, math.ceil(cl.actors * cl.actor_cpus)),
        include_dashboard=False,
        object_store_memory=256 * 1024**2,
    )
    return kw


# ---------------------------------------------------------------- generator and reward over a pool


class _OneChunk:
    """``RayGenerator.inner``: one call = one chunk on one actor, with the caller's params unchanged (what a
    caller that chunks and seeds by itself, like ``generate_stage``, expects of a sharded generator's inner)."""

    def __init__(self, outer: RayGenerator) -> None:
        self.outer = outer
        self.name = "ray-chunk"

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[list[GenOutput]]:
        return self.outer.generate_chunks([conversations], [params])[0]


class RayGenerator:
    """The :class:`~evarl.generation.base.Generator` protocol over a :class:`RayPool`.

    ``path`` is the model the actors must hold (None: whatever the pool holds)."""

    def __init__(self, pool: Any, path: str | None = None, chunk_prompts: int | None = None) -> None:
        self.pool = pool
        self.path = path
        self.chunk_prompts = chunk_prompts or pool.cfg.generation.chunk_prompts
        self.inner = _OneChunk(self)
        self._tok: tuple[str, Any] | None = None

    @property
    def name(self) -> str:
        if self.pool.gen_name is None:  # the backend's name ("hf", "vllm"), whatever the path
            self.pool.load(self._path())
        return str(self.pool.gen_name)

    def _path(self) -> str:
        p = self.path or self.pool.path
        if p is None:
            raise RuntimeError("RayGenerator: no model path (the pool holds none)")
        return p

    @property
    def tokenizer(self) -> Any:
        """The policy's tokenizer, loaded in this process (the weights stay in the actors)."""
        p = self._path()
        if self._tok is None or self._tok[0] != p:
            from evarl.models.loading import load_tokenizer

            self._tok = (p, load_tokenizer(p, self.pool.cfg.model.trust_remote_code))
        return self._tok[1]

    @property
    def model(self) -> Any:
        raise AttributeError(
            "RayGenerator holds no model in this process: the replicas live in the Ray actors "
            "(load one with evarl.models.loading.load_causal_lm)"
        )

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        """``ShardedGenerator.generate`` over the actors: chunk c of ``chunk_prompts`` conversations is seeded
        ``chunk_seed(params.seed, c)``; results in prompt order."""
        chunks = chunked(conversations, self.chunk_prompts)
        ps = [replace(params, seed=chunk_seed(params.seed, c)) for c in range(len(chunks))]
        return [row for part in self.generate_chunks(chunks, ps) for row in part]

    def generate_chunks(
        self,
        chunks: list[list[Conversation]],
        params_per_chunk: list[SamplingParams],
        on_done: Callable[[int, list[list[GenOutput]]], None] | None = None,
        have: dict[int, list[list[GenOutput]]] | None = None,
    ) -> list[list[list[GenOutput]]]:
        """Chunks cut and seeded by the caller, computed as the actors free up; ``on_done(c, outputs)`` for
        each newly finished chunk (completion order), so a stage can commit it; chunks in ``have`` are kept as
        they are. Results in chunk order."""
        if len(chunks) != len(params_per_chunk):
            raise ValueError(f"generate_chunks: {len(chunks)} chunks for {len(params_per_chunk)} params")
        return self.pool.map(
            "generate",
            list(zip(chunks, params_per_chunk)),
            have=have,
            on_done=on_done,
            what="generating",
            path=self._path(),
        )


class RayReward:
    """A reward source (``score(prompts, responses)``) over a :class:`RayPool`, grouped like ShardedReward."""

    def __init__(self, pool: Any, path: str | None = None, chunk_prompts: int | None = None) -> None:
        self.pool = pool
        self.path = path
        self.chunk_prompts = chunk_prompts or pool.cfg.generation.chunk_prompts
        self._name: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            if self.path is not None and self.path != self.pool.path:
                self.pool.load(self.path)
            self._name = str(self.pool.call("reward_name"))
        return self._name

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts for {len(responses)} responses")
        groups = consecutive_groups([p.id for p in prompts])
        payloads = []
        for chunk in chunked(groups, self.chunk_prompts):
            idx = [i for g in chunk for i in g]
            payloads.append(([prompts[i] for i in idx], [responses[i] for i in idx]))
        parts = self.pool.map("score", payloads, what="scoring", path=self.path or self.pool.path)
        return [r for part in parts for r in part]


__all__ = [
    "RayGenerator",
    "RayPool",
    "RayReward",
    "Replica",
    "actor_died_message",
    "cluster_problem",
]
