"""Processes, devices, shards and gathers: the one layer that spreads a round's work over several workers.

A run started as N processes (``torchrun --nproc_per_node N -m evarl run ...`` or ``accelerate launch``) runs
the same loop on every rank. Stages that are sums over prompts (generation, scoring, evolving, reference
log-probs, evaluation) cut their prompts into fixed chunks of ``generation.chunk_prompts`` prompts, and chunk
``c`` is computed by rank ``c mod N`` with seeds derived from ``(seed, c)`` only. Results are gathered on every
rank in chunk (= prompt) order, so N processes each do about 1/N of the work and produce the artifacts of a
single-process run. A prompt's n sibling responses always travel in one chunk. Only rank 0 writes run files
(``evarl.io`` writers are no-ops on other ranks) and every rank sees them after the stage's barrier.

The same chunking is what a Ray executor dispatches to actors (the generation issue): only *who* computes a
chunk changes, never what it contains or how it is seeded.

Device: ``device: auto`` is this process's CUDA device (``cuda:LOCAL_RANK``) when CUDA is present, else the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _initialized() -> bool:
    try:
        import torch.distributed as td
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return td.is_available() and td.is_initialized()


def world() -> World:
    """This process's rank and the world size (from the process group, else the launcher's environment)."""
    if _initialized():
        import torch.distributed as td

        return World(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def launched_size() -> int:
    """Processes the launcher started (WORLD_SIZE), known before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", 1))


def ray_problem(ray: str | bool) -> str | None:
    """Why Ray actors (``cluster.ray``) cannot be used by this process: both they and a multi-process launch
    spread the same prompt chunks, so a run uses one or the other."""
    n = launched_size()
    if ray is False or n <= 1:
        return None
    return (
        f"cluster.ray: this run was launched as {n} torch processes (WORLD_SIZE={n}) and asked for Ray "
        "actors too; both spread the same prompt chunks, use one or the other (one `evarl run` process "
        "with cluster.ray, or torchrun without it)"
    )


def init() -> World:
    """Join the process group when launched as several processes (gloo on CPU, NCCL on CUDA); idempotent."""
    if launched_size() > 1 and not _initialized():
        from accelerate import PartialState

        # reads RANK / WORLD_SIZE / MASTER_ADDR from the launcher; NCCL with CUDA, else gloo (accelerate only
        # forms a CPU process group when told cpu=True)
        PartialState(cpu=not cuda_available())
    return world()


def is_main() -> bool:
    return world().is_main


def barrier() -> None:
    if _initialized() and world().size > 1:
        import torch.distributed as td

        td.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. converting a model into the cache), then the others."""
    w = world()
    if not w.is_main:
        barrier()
    yield
    if w.is_main:
        barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a one-element list in a single process)."""
    if not _initialized() or world().size == 1:
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * world().size
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _initialized() or world().size == 1:
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


# ---------------------------------------------------------------- devices


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def device_problem(setting: str) -> str | None:
    """Why ``setting`` cannot be used on this machine (None when it can); checked before any model loads."""
    if setting in ("auto", "cpu"):
        return None
    if setting == "cuda" or setting.startswith("cuda:"):
        if not cuda_available():
            return f"{setting!r} was asked for but this machine has no CUDA device (use auto or cpu)"
        if setting.startswith("cuda:"):
            idx = setting.split(":", 1)[1]
            import torch

            if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
                return f"{setting!r}: no such CUDA device ({torch.cuda.device_count()} present)"
        return None
    return f"must be auto, cpu, cuda or cuda:N, got {setting!r}"


def resolve_device(setting: str = "auto") -> Any:
    """The ``torch.device`` every model of this process goes to."""
    import torch

    problem = device_problem(setting)
    if problem:
        raise ValueError(f"device: {problem}")
    if setting == "cpu" or (setting == "auto" and not cuda_available()):
        return torch.device("cpu")
    if setting in ("auto", "cuda"):
        return torch.device("cuda", world().local_rank % max(1, torch.cuda.device_count()))
    return torch.device(setting)


def release_memory() -> None:
    """Give freed tensors' memory back (Python's garbage, then CUDA's cache) before another model needs it."""
    import gc

    gc.collect()
    if cuda_available():
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------- chunks


def consecutive_groups(keys: Sequence[str]) -> list[list[int]]:
    """Indices of runs of equal consecutive keys: a prompt's sibling responses, which always share a chunk."""
    groups: list[list[int]] = []
    for i, k in enumerate(keys):
        if groups and keys[groups[-1][0]] == k:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of ``size`` items (the last may be shorter); fixed whatever the world size."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def stable_int(*parts: object) -> int:
    """A 31-bit integer (a seed) from a key of any parts; stable across processes and runs (unlike hash())."""
    key = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` of a sharded call: depends on (seed, chunk) only, never on the rank."""
    return (int(seed) * 10_007 + int(chunk)) % (2**31 - 1)


def in_shard() -> bool:
    """True inside a chunk's computation: nested sharded calls (a judge that generates) run locally."""
    return bool(getattr(_local, "depth", 0))


@contextlib.contextmanager
def shard_scope() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def map_chunks(
    n_chunks: int,
    fn: Callable[[int], T],
    have: dict[int, T] | None = None,
    commit: Callable[[int, T], None] | None = None,
) -> list[T]:
    """``[fn(0), ..., fn(n_chunks - 1)]`` on every rank, the chunks spread round-robin over the ranks.

    ``have`` holds chunks already computed (a resumed stage): they are not recomputed. The rest are done in
    waves of ``world size`` chunks; after each wave every rank has the wave's results, and ``commit(c, result)``
    is called for each new chunk in chunk order (only on rank 0), so a stage can append them to its partial file
    and a kill loses at most one wave. Every rank must call this with the same ``n_chunks`` and ``have`` keys.
    """
    w = world()
    results: dict[int, T] = dict(have or {})
    todo = [c for c in range(n_chunks) if c not in results]
    for start in range(0, len(todo), w.size):
        wave = todo[start : start + w.size]
        mine = wave[w.rank] if w.rank < len(wave) else None
        local = None
        if mine is not None:
            with shard_scope():
                local = fn(mine)
        gathered = all_gather_object((mine, local))
        for c, res in sorted((x for x in gathered if x[0] is not None), key=lambda x: x[0]):
            results[c] = res
            if commit is not None and w.is_main:
                commit(c, res)
    return [results[c] for c in range(n_chunks)]


def map_sharded(items: Sequence[T], chunk_size: int, fn: Callable[[int, list[T]], list[Any]]) -> list[Any]:
    """``fn(c, chunk)`` over fixed chunks of ``items``, spread over the ranks; the flattened results in item
    order on every rank. Inside a chunk (``in_shard()``) the call runs locally, unsharded."""
    chunks = chunked(items, chunk_size)
    if in_shard():
        return [y for c, ch in enumerate(chunks) for y in fn(c, ch)]
    return [y for part in map_chunks(len(chunks), lambda c: fn(c, chunks[c])) for y in part]
