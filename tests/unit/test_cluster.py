"""evarl.cluster without Ray: the chunks and seeds a Ray stage dispatches are those of the torch-process path.

A fake pool computes the chunks in this process in reverse order (actors finish in any order), so these tests
check the cutting, seeding, grouping and gathering of RayGenerator / RayReward against ShardedGenerator /
ShardedReward, the resume and commit contract of ``generate_chunks``, and the error texts.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from evarl.cluster import (
    RayGenerator,
    RayPool,
    RayReward,
    _init_kwargs,
    actor_died_message,
    cluster_problem,
)
from evarl.config import RunConfig
from evarl.generation.base import GenOutput, SamplingParams
from evarl.generation.sharded import ShardedGenerator
from evarl.rewards.sharded import ShardedReward
from evarl.types import Prompt, RewardResult


class EchoGenerator:
    """Outputs that depend on (conversation, params, position in the call): any change of chunking or seeding
    shows up."""

    name = "echo"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        self.calls.append((len(conversations), params.seed))
        return [
            [
                GenOutput(f"{conv[-1]['content']}|s{params.seed}|p{i}|j{j}", i + j, "stop")
                for j in range(params.n)
            ]
            for i, conv in enumerate(conversations)
        ]


class RecordingReward:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        self.calls.append([p.id for p in prompts])
        # depends on the call's content: a reward that compares siblings sees exactly its group
        return [
            RewardResult(float(len(r)) + 0.1 * k, info={"batch": len(prompts)})
            for k, (p, r) in enumerate(zip(prompts, responses))
        ]


class FakePool:
    """RayPool's interface, computed in-process; chunks finish in reverse order."""

    def __init__(self, chunk_prompts: int, gen: Any = None, reward: Any = None) -> None:
        self.cfg = SimpleNamespace(
            generation=SimpleNamespace(chunk_prompts=chunk_prompts),
            model=SimpleNamespace(trust_remote_code=False),
        )
        self.replica = SimpleNamespace(
            generate=(gen or EchoGenerator()).generate, score=(reward or RecordingReward()).score
        )
        self.path = "model"
        self.gen_name = "echo"
        self.maps: list[tuple[str, int, str]] = []

    def load(self, path: str) -> None:
        self.path = path

    def call(self, method: str, *args: Any) -> Any:
        return "recording" if method == "reward_name" else None

    def map(self, method, payloads, *, have=None, on_done=None, what="computing", path=None):  # noqa: ANN001
        self.maps.append((method, len(payloads), what))
        results = dict(have or {})
        for c in reversed(range(len(payloads))):
            if c in results:
                continue
            results[c] = getattr(self.replica, method)(*payloads[c])
            if on_done is not None:
                on_done(c, results[c])
        return [results[c] for c in range(len(payloads))]


def _convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"q{i}"}] for i in range(n)]


@pytest.mark.parametrize("n_prompts", [0, 1, 5, 8, 9])
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_generate_cuts_and_seeds_like_sharded_generator(n_prompts: int, chunk: int) -> None:
    params = SamplingParams(n=2, temperature=0.9, top_p=0.9, max_new_tokens=5, seed=11)
    local_inner = EchoGenerator()
    want = ShardedGenerator(local_inner, chunk).generate(_convs(n_prompts), params)
    ray_inner = EchoGenerator()
    got = RayGenerator(FakePool(chunk, gen=ray_inner)).generate(_convs(n_prompts), params)
    assert got == want
    # the same calls (chunk sizes and seeds), whatever the order the actors finished in
    assert sorted(ray_inner.calls) == sorted(local_inner.calls)


def test_score_groups_like_sharded_reward() -> None:
    ids = [
        "a",
        "a",
        "a",
        "b",
        "c",
        "c",
        "d",
        "d",
        "e",
        "a",
    ]  # "a" again later: a new group, as in ShardedReward
    prompts = [Prompt(id=i, messages=[{"role": "user", "content": i}]) for i in ids]
    responses = [f"r{k}" * (k + 1) for k in range(len(ids))]
    for chunk in (1, 2, 3, 10):
        local = RecordingReward()
        want = ShardedReward(local, chunk).score(prompts, responses)
        remote = RecordingReward()
        rr = RayReward(FakePool(chunk, reward=remote))
        assert rr.score(prompts, responses) == want
        assert sorted(remote.calls) == sorted(local.calls)
        assert rr.name == "recording"
    with pytest.raises(ValueError, match="2 prompts for 1 responses"):
        RayReward(FakePool(2)).score(prompts[:2], responses[:1])


def test_generate_chunks_commits_new_chunks_and_keeps_have() -> None:
    inner = EchoGenerator()
    pool = FakePool(2, gen=inner)
    gen = RayGenerator(pool)
    chunks = [_convs(2), _convs(2), _convs(1)]
    params = [SamplingParams(n=1, seed=10_007 * 3 + c) for c in range(3)]
    kept = [[GenOutput("kept", 1, "stop")]]
    done: list[int] = []
    out = gen.generate_chunks(chunks, params, on_done=lambda c, res: done.append(c), have={1: kept})
    assert out[1] == kept and sorted(done) == [0, 2]
    assert out[0] == EchoGenerator().generate(chunks[0], params[0])  # the caller's seeds, unchanged
    assert sorted(inner.calls) == [(1, params[2].seed), (2, params[0].seed)]
    with pytest.raises(ValueError, match="2 chunks for 1 params"):
        gen.generate_chunks(chunks[:2], params[:1])


def test_inner_is_one_chunk_with_the_callers_params() -> None:
    """generate_stage calls ``getattr(gen, 'inner', gen).generate`` per chunk: one dispatch, params as given."""
    inner = EchoGenerator()
    pool = FakePool(2, gen=inner)
    params = SamplingParams(n=2, seed=123)
    out = RayGenerator(pool).inner.generate(_convs(5), params)
    assert out == EchoGenerator().generate(_convs(5), params)
    assert inner.calls == [(5, 123)] and pool.maps == [("generate", 1, "generating")]


def test_driver_side_attributes() -> None:
    gen = RayGenerator(FakePool(4))
    assert gen.name == "echo" and gen.chunk_prompts == 4
    assert RayGenerator(FakePool(4), chunk_prompts=3).chunk_prompts == 3
    with pytest.raises(AttributeError, match="holds no model in this process"):
        _ = gen.model


def test_actor_died_message() -> None:
    msg = actor_died_message(1, 3, 6, "generating", 2, "ActorDiedError: killed")
    assert msg == (
        "Ray actor 1 died while generating chunk 3 of 6 (ActorDiedError: killed); "
        "finished chunks are kept (2 of 6), rerun the same command to resume"
    )
    msg = actor_died_message(0, 0, 2, "scoring", None)
    assert msg.startswith("Ray actor 0 died while scoring chunk 0 of 2; ")
    assert "rerun the same command to resume from this stage" in msg


def test_ray_and_torch_processes_are_refused_together(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig()
    assert cluster_problem(cfg) is None  # no Ray asked for
    cfg = replace(cfg, cluster=replace(cfg.cluster, ray=True))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cluster_problem(cfg) is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    problem = cluster_problem(cfg)
    assert problem is not None and "WORLD_SIZE=2" in problem and "use one or the other" in problem
    with pytest.raises(RuntimeError, match="use one or the other"):
        RayPool(cfg)  # refused before Ray is imported or started


def test_ray_init_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = _init_kwargs(SimpleNamespace(ray=True, actors=3, actor_cpus=0.5))
    assert local["num_cpus"] == 2 and local["include_dashboard"] is False and "address" not in local
    assert local["log_to_driver"] is False and local["ignore_reinit_error"] is True
    joined = _init_kwargs(SimpleNamespace(ray="auto", actors=2, actor_cpus=1.0))
    assert joined["address"] == "auto" and "num_cpus" not in joined
    assert _init_kwargs(SimpleNamespace(ray="ray://head:10001", actors=2, actor_cpus=1.0)) == {
        "address": "ray://head:10001"
    }
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # ray: true joins the cluster the environment names
    assert "num_cpus" not in _init_kwargs(SimpleNamespace(ray=True, actors=2, actor_cpus=1.0))
