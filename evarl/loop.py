"""THE offline eva loop (eva: Evolving Alignment via Asymmetric Self-Play, seeds 000/001 §3; online iterative
DPO of RLHF Workflow, seed 003 §3), top to bottom:

    for round t = 1..T:
        creator step   estimate  info(x) for x in X_{t-1}        generate n responses with pi_{t-1}, score, A*(x)
                       sample    X_info ~ info                   weighted without replacement (or greedy)
                       evolve    X_t = mix(evolve(X_info), X_{t-1})   filters, dedup, lineage
        solver step    generate  y_1..y_n ~ pi_{t-1}(.|x), x in X_t    (reused where x was in X_{t-1})
                       score     r(x, y)
                       pairs     (x, y+, y-)                     best vs worst, ties dropped
                       train     theta_t <- theta_{t-1}          DPO / IPO / SPPO / SimPO / ORPO / ...
        evaluate       held-out reward and IFEval accuracy of pi_t vs pi_0

Every stage reads its inputs from files and writes its outputs to files in `runs/<name>/round-00t/`, so a
killed run resumes at the first unfinished stage (see `evarl.runs`). Deviation from the paper: the creator
step's responses for x in X_{t-1} are reused by the solver step when x stays in X_t, since both come from the
same policy pi_{t-1}; this halves generation cost and does not change the algorithm.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from evarl.config import ConfigError, RunConfig, validate_config
from evarl.datasets_in import HELDOUT_SPLITS, read_prompts
from evarl.generation.base import Generator, GenOutput, Releasable, SamplingParams
from evarl.generation.factory import make_generator
from evarl.io import (
    DataError,
    iter_jsonl,
    read_json,
    read_jsonl,
    read_records,
    write_json,
    write_jsonl,
)
from evarl.runs import Run
from evarl.types import Completion, Pair, Prompt, Scored

CHUNK_PROMPTS = 16  # prompts per resumable generation chunk (the default of generation.chunk_prompts)


def _log(msg: str) -> None:
    from evarl.dist import is_main

    if is_main():  # one voice per run, whatever the number of processes
        print(f"[evarl {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- models


class Models:
    """Keeps at most one policy generator (and an optional separate creator) in memory; reloads by path.
    Every generator it hands out is sharded over the run's processes by fixed prompt chunks (evarl.dist)."""

    def __init__(self, cfg: RunConfig, device: Any = None) -> None:
        self.cfg = cfg
        self.device = device
        self._path: str | None = None
        self._gen: Generator | None = None
        self._creator: Generator | None = None
        self._teacher: Generator | None = None  # solver.pairs=teacher_demo
        self.pool: Any = None  # Ray actors holding the policy (cluster.ray); None = this process
        if cfg.cluster.ray is not False:
            from evarl.cluster import RayPool

            self.pool = RayPool(cfg)

    def policy(self, path: str) -> Generator:
        if self.pool is not None:
            from evarl.cluster import RayGenerator

            if self._path != path:
                self.pool.load(path)
                self._gen, self._path = RayGenerator(self.pool, path), path
            assert self._gen is not None
            return self._gen
        if self._path != path:
            if isinstance(self._gen, Releasable):  # a sleeping vLLM engine: wake it with the new weights
                self._gen.wake(path)
            else:
                self._gen = None
                self._gen = make_generator(self.cfg, path, self.device)
            self._path = path
        assert self._gen is not None
        return self._gen

    def creator(self, policy_path: str) -> Generator:
        c = self.cfg.creator.model
        if c == "policy":
            return self.policy(policy_path)
        if self._creator is None and c == "endpoint":  # any OpenAI-compatible server (generation.endpoint)
            from evarl.generation.openai_api import OpenAIGenerator
            from evarl.generation.sharded import ShardedGenerator

            self._creator = ShardedGenerator(
                OpenAIGenerator.from_config(self.cfg.generation), self.cfg.generation.chunk_prompts
            )
        elif self._creator is None:
            from evarl.models.loading import resolve_model_path

            self._creator = make_generator(self.cfg, resolve_model_path(c), self.device)
        return self._creator

    def teacher(self) -> Generator:
        """The teacher of teacher-demonstration pairs (solver.teacher): a local model loaded like the policy, or
        the model served at solver.teacher_endpoint. A failed endpoint request yields an "error" output (counted
        by the pairs stage); an endpoint that is unreachable, refuses the key or does not serve the model stops
        the run (EndpointError, exit 2) instead of failing every item."""
        s = self.cfg.solver
        if self._teacher is None and s.teacher_endpoint:
            from evarl.generation.openai_api import OpenAIGenerator
            from evarl.generation.sharded import ShardedGenerator

            api = OpenAIGenerator(
                s.teacher_endpoint,
                str(s.teacher),
                api_key_env=self.cfg.generation.api_key_env,
                concurrency=self.cfg.generation.concurrency,
                timeout_s=s.teacher_timeout_s,
                raise_on_error=False,
            )
            self._teacher = ShardedGenerator(api, self.cfg.generation.chunk_prompts)
        elif self._teacher is None:
            from evarl.models.loading import resolve_model_path

            self._teacher = make_generator(self.cfg, resolve_model_path(str(s.teacher)), self.device)
        return self._teacher

    def release(self) -> None:
        """Free every generator's weights before training (the policy's and a separate creator model's; an
        endpoint creator holds none) and return the memory to the device; they are rebuilt lazily after."""
        if isinstance(self._gen, Releasable):  # vLLM: sleep (weights and KV cache off the GPU), woken later
            self._gen.release()
        else:
            self._gen = None
        self._path = None
        if self.cfg.creator.model not in ("policy", "endpoint"):
            self._creator = None
        if not self.cfg.solver.teacher_endpoint:
            self._teacher = None
        if self.pool is not None:
            self.pool.release()
        from evarl.dist import release_memory

        release_memory()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


# ---------------------------------------------------------------- stages (files -> files)


def generate_stage(
    gen: Generator,
    prompts: list[Prompt],
    params: SamplingParams,
    out_path: Path,
    reuse: dict[str, list[Completion]] | None = None,
    desc: str = "generate",
    chunk_prompts: int = CHUNK_PROMPTS,
    progress: bool = True,
) -> dict[str, Any]:
    """n responses per prompt, in resumable chunks of ``chunk_prompts`` prompts, spread over the processes.
    Chunk c is seeded with (params.seed, c) only, so one process and N give the same samples; rank 0 appends
    each finished chunk to ``<out>.partial.jsonl`` and a rerun continues from there."""
    from evarl.dist import is_main, map_chunks

    partial = out_path.with_name(out_path.stem + ".partial.jsonl")
    have: dict[str, list[Completion]] = defaultdict(list)
    if partial.exists():
        with open(partial, encoding="utf-8") as f:
            for line in f:
                try:
                    have[json.loads(line)["prompt_id"]].append(Completion(**json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError):
                    break  # a line cut by a kill: that chunk is redone
    reuse = reuse or {}
    todo = [p for p in prompts if p.id not in reuse]
    chunks = [todo[i : i + chunk_prompts] for i in range(0, len(todo), chunk_prompts)]
    done = {
        c: [have[p.id] for p in chunk]
        for c, chunk in enumerate(chunks)
        if all(len(have.get(p.id, [])) == params.n for p in chunk)
    }
    inner = getattr(gen, "inner", gen)  # the chunking is done here, not by a sharded wrapper

    def chunk_params(c: int) -> SamplingParams:
        return SamplingParams(
            params.n, params.temperature, params.top_p, params.max_new_tokens, params.seed * 10_007 + c
        )

    def rows(c: int, outs: list[list[GenOutput]]) -> list[list[Completion]]:
        return [
            [Completion(p.id, j, o.text, o.num_tokens, o.finish_reason) for j, o in enumerate(row)]
            for p, row in zip(chunks[c], outs)
        ]

    def one(c: int) -> list[list[Completion]]:
        return rows(c, inner.generate([p.messages for p in chunks[c]], chunk_params(c)))

    bar = None
    if is_main() and progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chunks), initial=len(done), desc=desc, unit="chunk", leave=False)
    log = open(partial, "a", encoding="utf-8") if is_main() else None  # noqa: SIM115 (closed below)

    def commit(c: int, rows: list[list[Completion]]) -> None:
        assert log is not None
        log.write("".join(json.dumps(x.to_dict(), ensure_ascii=False) + "\n" for row in rows for x in row))
        log.flush()
        if bar is not None:
            bar.update(1)

    try:
        # Ray actors: chunks go out as the actors free up, each committed as it finishes
        if hasattr(gen, "generate_chunks"):
            new: dict[int, list[list[Completion]]] = {}

            def on_done(c: int, outs: list[list[GenOutput]]) -> None:
                new[c] = rows(c, outs)
                commit(c, new[c])

            gen.generate_chunks(
                [[p.messages for p in ch] for ch in chunks],
                [chunk_params(c) for c in range(len(chunks))],
                on_done=on_done,
                have=dict(done),
            )
            results = [done[c] if c in done else new[c] for c in range(len(chunks))]
        else:
            results = map_chunks(len(chunks), one, have=done, commit=commit)
    finally:
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
    for chunk, rows in zip(chunks, results):
        for p, comps in zip(chunk, rows):
            have[p.id] = comps
    rows_out = [c for p in prompts for c in (reuse.get(p.id) or have[p.id])]
    write_jsonl(out_path, rows_out)
    if is_main():
        partial.unlink(missing_ok=True)
    return {
        "prompts": len(prompts),
        "responses": len(rows_out),
        "reused": sum(p.id in reuse for p in prompts),
    }


def score_stage(
    reward: Any, prompts: list[Prompt], gens_path: Path, out_path: Path, chunk_prompts: int = CHUNK_PROMPTS
) -> dict[str, Any]:
    """Score every generation; chunks of ``chunk_prompts`` prompts (all n siblings together) are spread over
    the processes (a judge or pairwise model sees a prompt's siblings in one call)."""
    from evarl.cluster import RayReward
    from evarl.rewards.sharded import ShardedReward

    by_id = {p.id: p for p in prompts}
    comps = read_records(gens_path, Completion)
    sharded = (
        reward if isinstance(reward, ShardedReward | RayReward) else ShardedReward(reward, chunk_prompts)
    )
    results = sharded.score([by_id[c.prompt_id] for c in comps], [c.text for c in comps])
    scored: list[Scored] = []
    for c, r in zip(comps, results):
        comps_info = dict(r.info.get("components", {})) if isinstance(r.info, dict) else {}
        if "pairwise" in comps_info:  # mean P(y > y_j) over the siblings: soft SPPO's P(y > pi_t)
            comps_info["win_prob"] = comps_info["pairwise"]
        scored.append(
            Scored(c.prompt_id, c.index, None if r.failed else float(r.score), r.failed, comps_info)
        )
    write_jsonl(out_path, scored)
    ok = [s.reward for s in scored if s.reward is not None]
    return {
        "scored": len(scored),
        "failed": sum(s.failed for s in scored),
        "mean_reward": round(sum(ok) / len(ok), 4) if ok else None,
    }


def rewards_by_prompt(scores_path: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for s in read_records(scores_path, Scored):
        if s.reward is not None:
            out[s.prompt_id].append(s.reward)
    return dict(out)


def load_prompts(path: Path) -> list[Prompt]:
    return read_records(path, Prompt)


def completions_by_prompt(path: Path) -> dict[str, list[Completion]]:
    out: dict[str, list[Completion]] = defaultdict(list)
    for c in read_records(path, Completion):
        out[c.prompt_id].append(c)
    return dict(out)


# ---------------------------------------------------------------- seed prompts


def seed_prompts(cfg: RunConfig) -> tuple[list[Prompt], list[Prompt]]:
    from evarl.tasks import default as default_task

    t = cfg.task
    if t.name == "file":
        train = read_prompts(t.train_file, t.split, t.subset, t.columns)[: t.train_prompts]
    else:
        train = default_task.train_prompts(
            t.train_prompts, t.seed, t.min_constraints, t.max_constraints, t.checkers
        )
    if t.heldout_file:
        held = read_prompts(t.heldout_file, t.heldout_split, t.subset, t.columns, HELDOUT_SPLITS)[
            : t.heldout_prompts
        ]
    elif t.name == "default":
        held = default_task.heldout_prompts(t.heldout_prompts, t.checkers)
    else:
        held = []
    return train, held


def prompt_pool(cfg: RunConfig) -> list[Prompt]:
    """Every training prompt the task can supply, in the seeded order whose first ``task.train_prompts`` are the
    seed prompts."""
    from evarl.tasks import default as default_task

    t = cfg.task
    if t.name == "file":
        return read_prompts(t.train_file, t.split, t.subset, t.columns)
    return default_task.train_prompts(
        default_task.train_pool_size(), t.seed, t.min_constraints, t.max_constraints, t.checkers
    )


def fresh_split(cfg: RunConfig, k: int) -> list[Prompt]:
    """Split ``k`` of the original prompt pool, ``task.train_prompts`` prompts each; split 0 is the seed set.

    eva's "+ new human prompts" arm (Ye et al. 2024, arXiv:2411.00062, Table 2): every round trains on prompts
    from the original distribution that no earlier round has seen, as many as eva's own set. Rounds before
    ``creator.start_round`` train on the seed set (split 0); round t >= start_round on split t - start_round + 1
    (so a run that starts from theta_1, start_round 1, never trains theta_1's prompts again)."""
    n = cfg.task.train_prompts
    pool = prompt_pool(cfg)
    if (k + 1) * n > len(pool):
        raise ConfigError(
            [
                f"creator.fresh_prompts: split {k} needs prompts {k * n + 1}-{(k + 1) * n} of the pool, "
                f"which holds {len(pool)}; lower rounds or task.train_prompts"
            ]
        )
    return pool[k * n : (k + 1) * n]


def seed_stage(r: Run, cfg: RunConfig) -> tuple[Path, Path]:
    """The `seed` stage shared by the offline and online loops: training and held-out prompts to files."""
    seed_path, held_path = r.dir / "seed_prompts.jsonl", r.dir / "heldout_prompts.jsonl"

    def _seed() -> dict[str, Any]:
        train, held = seed_prompts(cfg)
        write_jsonl(seed_path, train)
        write_jsonl(held_path, held)
        return {"train": len(train), "heldout": len(held)}

    r.stage("seed", _seed, [seed_path, held_path])
    return seed_path, held_path


def policy_with_chat_template(cfg: RunConfig, base_path: str, run_dir: Path) -> str:
    """`<run>/base_model/`: the base model whose tokenizer carries `model.chat_template` (call on rank 0 first)."""
    from evarl.config import chat_template_text
    from evarl.dist import is_main
    from evarl.models.chat_template import with_chat_template

    out = run_dir / "base_model"
    if is_main():
        template = chat_template_text(cfg.model.chat_template or "")
        with_chat_template(base_path, template, out, cfg.model.trust_remote_code)
    return str(out)


# ---------------------------------------------------------------- the loop


def run(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    errors = validate_config(cfg)
    if errors:
        raise ConfigError(errors)
    if cfg.solver.offline_pairs:  # a bad row stops the run now (file:line), not after a round of generation
        history_pairs([], cfg.solver.offline_pairs)
    import torch

    from evarl.creator.evolve import evolve_prompts
    from evarl.creator.evolve.base import EvolveContext
    from evarl.creator.filters import apply_filters
    from evarl.creator.informativeness import informativeness
    from evarl.creator.mixing import mix_prompts
    from evarl.creator.sampling import sample_prompts
    from evarl.dist import init, is_main, main_first, resolve_device
    from evarl.eval.heldout import evaluate_heldout
    from evarl.eval.report import write_round_markdown
    from evarl.models.loading import resolve_model_path
    from evarl.registry import LOSSES
    from evarl.rewards import build_reward
    from evarl.rewards.combine import needs_policy_tokenizer
    from evarl.rewards.sharded import ShardedReward
    from evarl.solver.logprobs import compute_reference_logps
    from evarl.solver.pairs import build_pairs
    from evarl.solver.trainer import train_preference
    from evarl.tracking import open_run_tracker, track_round, train_steps_before

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.time()
    w = init()  # joins the process group under torchrun / accelerate launch
    device = resolve_device(cfg.device)
    solver_cfg = cfg.solver  # a solver.preset was resolved when the config was loaded
    r = Run(cfg).open()
    _log(f"run directory {r.dir}" + (f" (rank {w.rank} of {w.size}, {device})" if w.size > 1 else ""))
    with main_first():  # rank 0 converts the embedded model into the cache once
        base_path = resolve_model_path(cfg.model.path, cfg.model.gguf_file)
        if cfg.model.chat_template:  # every policy tokenizer renders with it (evarl.models.chat_template)
            base_path = policy_with_chat_template(cfg, base_path, r.dir)
    models = Models(cfg, device)
    r.set("world_size", w.size)
    tracker = open_run_tracker(cfg, r, is_main())  # one tracker run for the whole run (evarl.tracking)
    g = cfg.generation
    gen_params = SamplingParams(g.n, g.temperature, g.top_p, g.max_new_tokens, cfg.seed)
    eval_params = SamplingParams(1, cfg.eval.temperature, g.top_p, cfg.eval.max_new_tokens, cfg.seed)

    rewards: dict[str, Any] = {}  # built once per policy (a classifier RM is not reloaded every stage)

    def reward_for(policy_path: str) -> Any:
        if policy_path not in rewards and models.pool is not None:  # built in the actors, next to the policy
            from evarl.cluster import RayReward

            models.policy(policy_path)
            rewards.clear()
            rewards[policy_path] = RayReward(models.pool, policy_path)
        if policy_path not in rewards:
            self_judge = any(
                s.name in ("judge", "pairwise") and s.model in (None, "policy") for s in cfg.reward.sources
            )
            gen = models.policy(policy_path) if self_judge else None
            tok = (
                getattr(models.policy(policy_path), "tokenizer", None)
                if needs_policy_tokenizer(cfg.reward)
                else None
            )
            rewards.clear()
            rewards[policy_path] = ShardedReward(
                build_reward(cfg.reward, policy=gen, policy_tokenizer=tok, device=device), g.chunk_prompts
            )
        return rewards[policy_path]

    # ---- seed prompts and the base policy's held-out score
    seed_path, held_path = seed_stage(r, cfg)
    heldout = load_prompts(held_path)
    r0 = r.round_dir(0)
    if solver_cfg.sft_data or solver_cfg.eft_data:  # M_1 = SFT(M_0) on IFT + EFT: the base of every round
        m0, sft_dir = base_path, r0 / "sft"
        r.stage("round-000/sft", lambda: sft_stage(cfg, m0, sft_dir, progress, device), [sft_dir / "model"])
        base_path = str(r.require(r0 / "sft" / "model", "round-000/sft"))
    if cfg.eval.enabled and cfg.eval.baseline and heldout:
        r.stage(
            "round-000/eval",
            lambda: eval_stage(
                evaluate_heldout, models.policy(base_path), heldout, reward_for(base_path), eval_params, r0
            ),
            [r0 / "eval.json"],
        )
    track_round(r, tracker, 0)

    prev_prompts_path = seed_path
    policy_path = base_path
    for t in range(1, cfg.rounds + 1):
        rd = r.round_dir(t)
        key = f"round-{t:03d}"
        _log(f"round {t}/{cfg.rounds}: policy {policy_path}")
        x_prev = load_prompts(prev_prompts_path)
        r.stage(
            f"{key}/prompts",
            lambda: (write_jsonl(rd / "prompts.jsonl", x_prev), {"prompts": len(x_prev)})[1],
            [rd / "prompts.jsonl"],
        )

        # ---- creator step: estimate, sample, evolve (from creator.start_round on; earlier rounds are plain
        # solver rounds on the seed prompts: Table 2's theta_0 -> theta_1 DPO round before eva)
        creator_on = cfg.creator.enabled and t >= cfg.creator.start_round
        # the uniform metric needs no estimate: every prompt has the same informativeness, so the creator step
        # skips generating and scoring (the self-rewarding pipeline samples seed prompts this way)
        estimate = cfg.creator.metric != "uniform"
        if creator_on and estimate:
            r.stage(
                f"{key}/generate",
                lambda: generate_stage(
                    models.policy(policy_path),
                    x_prev,
                    gen_params,
                    rd / "generations.jsonl",
                    desc=f"r{t} creator generate",
                    chunk_prompts=g.chunk_prompts,
                    progress=progress,
                ),
                [rd / "generations.jsonl"],
            )
            r.stage(
                f"{key}/score",
                lambda: score_stage(
                    reward_for(policy_path),
                    x_prev,
                    rd / "generations.jsonl",
                    rd / "scores.jsonl",
                    g.chunk_prompts,
                ),
                [rd / "scores.jsonl"],
            )
        if creator_on:

            def _info() -> dict[str, Any]:
                rewards = rewards_by_prompt(rd / "scores.jsonl") if estimate else {p.id: [] for p in x_prev}
                info = dict.fromkeys(rewards, 1.0)
                if estimate:
                    info = informativeness(cfg.creator.metric, rewards)
                write_jsonl(
                    rd / "info.jsonl",
                    [{"prompt_id": k, "value": v, "rewards": rewards[k]} for k, v in info.items()],
                )
                vals = list(info.values())
                return {"prompts": len(info), "mean": round(sum(vals) / len(vals), 4) if vals else None}

            r.stage(f"{key}/info", _info, [rd / "info.jsonl"])

            def _sample() -> dict[str, Any]:
                info = {row["prompt_id"]: row["value"] for row in read_jsonl(rd / "info.jsonl")}
                ids = set(
                    sample_prompts(cfg.creator.sampler, info, cfg.creator.sample_fraction, cfg.seed * 31 + t)
                )
                chosen = [p for p in x_prev if p.id in ids]
                write_jsonl(rd / "sampled.jsonl", chosen)
                return {"sampled": len(chosen)}

            r.stage(f"{key}/sample", _sample, [rd / "sampled.jsonl"])

        if creator_on and cfg.creator.evolve:

            def _evolve() -> dict[str, Any]:
                parents = load_prompts(rd / "sampled.jsonl")
                c = cfg.creator
                ctx = EvolveContext.from_config(
                    c,
                    models.creator(policy_path),
                    round=t,
                    seed=cfg.seed * 1009 + t,
                    checkers=cfg.task.checkers,
                )
                children = evolve_prompts(parents, c.methods, ctx)
                kept, dropped = apply_filters(
                    children, x_prev, c.filters, c.max_prompt_chars, c.near_dup_threshold
                )
                write_jsonl(rd / "evolved_all.jsonl", children)
                write_jsonl(rd / "evolved.jsonl", kept)
                methods: dict[str, int] = defaultdict(int)
                for p in kept:
                    methods[p.method or "?"] += 1
                return {
                    "children": len(children),
                    "kept": len(kept),
                    "dropped": dropped,
                    "methods": dict(methods),
                }

            r.stage(f"{key}/evolve", _evolve, [rd / "evolved.jsonl"])

            def _mix() -> dict[str, Any]:
                evolved = load_prompts(rd / "evolved.jsonl")
                if cfg.creator.mode == "scratch":
                    mixed = load_prompts(seed_path) + [p for p in _all_evolved(r, t)]
                else:
                    # equal-size prompt sets each round (seed 001 appendix A): |X_t| = |X_{t-1}|
                    mixed = mix_prompts(
                        evolved, x_prev, cfg.creator.mix_ratio, cfg.seed * 37 + t, total=len(x_prev)
                    )
                write_jsonl(rd / "train_prompts.jsonl", mixed)
                return {
                    "prompts": len(mixed),
                    "evolved": sum(p.method is not None and p.round == t for p in mixed),
                }

            r.stage(f"{key}/mix", _mix, [rd / "train_prompts.jsonl"])

            if cfg.creator.score_prompts:  # appendix E: complexity and quality (1-5) of the new prompt set

                def _prompt_scores() -> dict[str, Any]:
                    from evarl.creator.scoring import score_prompts

                    rows = score_prompts(
                        load_prompts(rd / "train_prompts.jsonl"),
                        models.creator(policy_path),
                        cfg.seed * 53 + t,
                    )
                    write_jsonl(rd / "prompt_scores.jsonl", rows)
                    ok = [x for x in rows if x.get("complexity") is not None]
                    return {"scored": len(rows), "parsed": len(ok)}

                r.stage(f"{key}/prompt_scores", _prompt_scores, [rd / "prompt_scores.jsonl"])
        elif creator_on:  # Table 5's "no evolve" arms: the solver trains on the sampled informative subset
            r.stage(
                f"{key}/mix",
                lambda: (
                    write_jsonl(rd / "train_prompts.jsonl", s := load_prompts(rd / "sampled.jsonl")),
                    {"prompts": len(s), "evolved": 0},
                )[1],
                [rd / "train_prompts.jsonl"],
            )
        else:  # no creator: the previous prompt set, or (creator.fresh_prompts) a fresh split of the pool
            fresh = cfg.creator.fresh_prompts and t >= cfg.creator.start_round
            x_fresh = fresh_split(cfg, t - cfg.creator.start_round + 1) if fresh else x_prev
            r.stage(
                f"{key}/mix",
                lambda: (write_jsonl(rd / "train_prompts.jsonl", x_fresh), {"prompts": len(x_fresh)})[1],
                [rd / "train_prompts.jsonl"],
            )

        # ---- solver step: generate, score, pairs, train
        x_t = load_prompts(rd / "train_prompts.jsonl")

        def _train_generate() -> dict[str, Any]:
            reuse: dict[str, list[Completion]] = {}
            if (rd / "generations.jsonl").exists() and cfg.creator.mode == "incremental":
                reuse = completions_by_prompt(rd / "generations.jsonl")
            reuse = {k: v for k, v in reuse.items() if len(v) == g.n}
            return generate_stage(
                models.policy(policy_path),
                x_t,
                gen_params,
                rd / "train_generations.jsonl",
                reuse,
                desc=f"r{t} solver generate",
                chunk_prompts=g.chunk_prompts,
                progress=progress,
            )

        r.stage(f"{key}/train_generate", _train_generate, [rd / "train_generations.jsonl"])
        teacher_demo = solver_cfg.pairs == "teacher_demo"
        if not teacher_demo:  # teacher-demonstration pairs are not ordered by a reward
            r.stage(
                f"{key}/train_score",
                lambda: score_stage(
                    reward_for(policy_path),
                    x_t,
                    rd / "train_generations.jsonl",
                    rd / "train_scores.jsonl",
                    g.chunk_prompts,
                ),
                [rd / "train_scores.jsonl"],
            )
        else:  # teacher demonstration: one (greedy) teacher response per training prompt
            r.stage(
                f"{key}/teacher_generate",
                lambda: generate_stage(
                    models.teacher(),
                    x_t,
                    SamplingParams(1, 0.0, 1.0, g.max_new_tokens, cfg.seed * 59 + t),
                    rd / "teacher_generations.jsonl",
                    desc=f"r{t} teacher generate",
                    chunk_prompts=g.chunk_prompts,
                    progress=progress,
                ),
                [rd / "teacher_generations.jsonl"],
            )

        def _pairs() -> dict[str, Any]:
            by_id = {p.id: p for p in x_t}
            comps = read_records(rd / "train_generations.jsonl", Completion)
            if teacher_demo:
                teacher = read_records(rd / "teacher_generations.jsonl", Completion)
                pairs, skipped = demo_pairs(by_id, teacher, comps)
            else:
                scores = read_records(rd / "train_scores.jsonl", Scored)
                pairs, skipped = build_pairs(
                    solver_cfg.pair_rule, by_id, comps, scores, solver_cfg.min_margin, cfg.seed * 41 + t
                )
            if solver_cfg.rewrite:
                from evarl.solver.rewrite import rewrite_chosen

                pairs = rewrite_chosen(pairs, models.policy(policy_path), cfg.seed * 43 + t, g.max_new_tokens)
            built = len(pairs)
            if solver_cfg.max_pairs is not None and built > solver_cfg.max_pairs:
                # a seeded subset, in the original order: arms of an ablation train on equally many pairs
                keep = set(random.Random(cfg.seed * 53 + t).sample(range(built), solver_cfg.max_pairs))
                pairs = [p for i, p in enumerate(pairs) if i in keep]
            write_jsonl(rd / "pairs.jsonl", pairs)
            return {"pairs": len(pairs), "built": built, "skipped": skipped}

        r.stage(f"{key}/pairs", _pairs, [rd / "pairs.jsonl"])

        scratch = cfg.creator.mode == "scratch"
        start_path = base_path if scratch else policy_path
        ref_path = base_path if (solver_cfg.reference == "initial" or scratch) else policy_path
        loss = LOSSES.get(solver_cfg.loss)
        needs_ref = getattr(loss, "needs_reference", True)

        def train_pairs() -> list[Pair]:
            # scratch mode: round t's prompt set already is X_0 and every evolved set so far (see _mix), so the
            # round trains on its own pairs only; each seed prompt is trained once, not once per round.
            # solver.history=all (RLHF Workflow's historical data) trains on every round's pairs so far.
            return train_pair_set()[0]

        def train_pair_set() -> tuple[list[Pair], dict[str, int]]:
            rounds = range(1, t + 1) if solver_cfg.history == "all" else [t]
            return history_pairs([r.round_dir(k) / "pairs.jsonl" for k in rounds], solver_cfg.offline_pairs)

        if needs_ref:

            def _ref() -> dict[str, Any]:
                from evarl.dist import map_sharded
                from evarl.generation.hf import generation_dtype

                if (
                    g.backend in ("hf", "hf-static")
                    and generation_dtype(g.dtype or cfg.model.dtype, device) == solver_cfg.param_dtype
                    and models.pool is None  # under Ray the policy's weights live in the actors
                ):
                    # the generator already holds the reference weights, in the dtype the trainer uses
                    gen = models.policy(ref_path)
                    model, tok = gen.model, gen.tokenizer
                else:
                    from evarl.models.loading import load_causal_lm, load_tokenizer

                    model = load_causal_lm(
                        ref_path, solver_cfg.param_dtype, cfg.model.trust_remote_code, device=device
                    )
                    tok = load_tokenizer(ref_path, cfg.model.trust_remote_code)
                pairs = train_pairs()
                rows = map_sharded(  # fixed chunks of pairs over the processes, gathered in pair order
                    pairs,
                    g.chunk_prompts * solver_cfg.batch_size,
                    lambda c, chunk: compute_reference_logps(
                        model, tok, chunk, solver_cfg, solver_cfg.batch_size
                    ),
                )
                for i, row in enumerate(rows):
                    row["pair_index"] = i
                write_jsonl(rd / "ref_logps.jsonl", rows)
                return {"pairs": len(rows)}

            r.stage(f"{key}/ref_logps", _ref, [rd / "ref_logps.jsonl"])

        def _train() -> dict[str, Any]:
            pairs, pair_counts = train_pair_set()
            if not pairs:
                _log(
                    f"round {t}: no preference pairs (every prompt's responses tied or failed), the policy is "
                    "carried over unchanged; raise generation.n or generation.temperature, or lower solver.min_margin"
                )
                return {"skipped": "no pairs"}
            ref = read_jsonl(rd / "ref_logps.jsonl") if needs_ref else None
            models.release()  # free the generator's weights (and rewards holding it) while training
            rewards.clear()
            summary = train_preference(
                start_path, pairs, ref, solver_cfg, rd / "train", cfg.seed * 47 + t, progress, device=device
            )
            summary.update(pair_counts)  # pairs_trained, from_rounds, offline, duplicates_dropped
            return {k: v for k, v in summary.items() if isinstance(v, int | float | str)}

        tracker.train_offset = train_steps_before(r.manifest["stages"], t)  # one global step over rounds
        trained = r.stage(f"{key}/train", _train, [rd / "train" / "model"])
        if "skipped" not in trained.get(
            "counts", {}
        ):  # lineage: only a round without pairs carries pi_{t-1} over
            policy_path = str(r.require(rd / "train" / "model", f"{key}/train"))

        if cfg.eval.enabled and heldout:
            r.stage(
                f"{key}/eval",
                lambda: eval_stage(
                    evaluate_heldout,
                    models.policy(policy_path),
                    heldout,
                    reward_for(policy_path),
                    eval_params,
                    rd,
                ),
                [rd / "eval.json"],
            )
        r.stage(
            f"{key}/report",
            lambda: {"path": str(write_round_markdown(r.dir, t)) if is_main() else None},
        )
        track_round(r, tracker, t)
        # the next round's creator draws from this round's training set; without evolution (creator.evolve
        # false) or with fresh splits there are no new prompts to carry, so the previous set stays
        if not cfg.creator.fresh_prompts and (not creator_on or cfg.creator.evolve):
            prev_prompts_path = rd / "train_prompts.jsonl"

    models.close()
    tracker.close()
    if policy_path != base_path:  # a round trained: <run>/model/ with its model card (and the upload)
        from evarl.model_card import finish_model

        finish_model(r, cfg, Path(policy_path), cfg.rounds, log=_log)
    summary = summarize(r, cfg, time.time() - t_start)
    if summary.get("best_round") is not None and is_main():  # the best iterate by held-out mean reward
        r.set("best_round", summary["best_round"])
    write_json(r.dir / "summary.json", summary)
    if is_main():
        try:  # the whole-run page: report.html + plots/ + report.md (a plotting problem never fails a run)
            from evarl.eval.report import build_report

            build_report([r.dir], r.dir)
        except Exception as e:  # noqa: BLE001
            _log(f"report.html could not be built ({e}); run `evarl report {r.dir}`")
        print_summary(summary)
    return summary


def _all_evolved(r: Run, t: int) -> list[Prompt]:
    out: list[Prompt] = []
    for k in range(1, t + 1):
        p = r.round_dir(k) / "evolved.jsonl"
        if p.exists():
            out.extend(load_prompts(p))
    return out


def sft_stage(cfg: RunConfig, model_path: str, out_dir: Path, progress: bool, device: Any) -> dict[str, Any]:
    """The `round-000/sft` stage: ``model_path`` fine-tuned on solver.sft_data + solver.eft_data (EFT rows as
    judge-prompt -> judgement examples, evarl.eft) with the solver's settings at solver.sft_learning_rate for
    solver.sft_epochs; the model goes to ``out_dir/model``."""
    import dataclasses

    from evarl.eft import judge_template, load_eft_examples
    from evarl.solver.sft import load_sft_examples, train_sft

    s = cfg.solver
    examples = [e for f in s.sft_data for e in load_sft_examples(f)]
    n_ift = len(examples)
    if s.eft_data:
        template = judge_template()
        for f in s.eft_data:
            examples.extend(load_eft_examples(f, template))
    sft_cfg = dataclasses.replace(s, learning_rate=s.sft_learning_rate, epochs=s.sft_epochs)
    summary = train_sft(model_path, examples, sft_cfg, out_dir, cfg.seed * 61 + 1, progress, device=device)
    out = {k: v for k, v in summary.items() if isinstance(v, int | float | str)}
    return {**out, "ift_examples": n_ift, "eft_examples": len(examples) - n_ift}


def demo_pairs(
    prompts: dict[str, Prompt], teacher: list[Completion], student: list[Completion]
) -> tuple[list[Pair], dict[str, int]]:
    """Teacher-demonstration pairs (the teacher's response chosen, the student's lowest-index response
    rejected) and the prompts without a pair, by reason: teacher_failed (the request still failed after its
    retries, e.g. it timed out), teacher_empty, teacher_truncated (cut at max_new_tokens: a partial
    demonstration is not trained as the preferred answer), identical (same text as the student's)."""
    from evarl.solver.pairs import teacher_demo_pairs

    reasons = ("teacher_failed", "teacher_empty", "teacher_truncated", "identical", "no_student")
    skipped = dict.fromkeys(reasons, 0)
    texts: dict[str, str] = {}
    students = {c.prompt_id for c in student if c.text.strip()}
    for c in teacher:
        if c.prompt_id not in prompts:
            continue
        if c.finish_reason == "error":
            skipped["teacher_failed"] += 1
        elif not c.text.strip():
            skipped["teacher_empty"] += 1
        elif c.finish_reason == "length":
            skipped["teacher_truncated"] += 1
        elif c.prompt_id not in students:
            skipped["no_student"] += 1
        else:
            texts[c.prompt_id] = c.text
    pairs = teacher_demo_pairs(prompts, texts, student)
    skipped["identical"] = len(texts) - len(pairs)
    return pairs, skipped


def history_pairs(paths: list[Path], offline: str | None = None) -> tuple[list[Pair], dict[str, int]]:
    """The training pairs of a round: the pairs files of `paths` (this round's, or every round's so far with
    solver.history=all), preceded by the offline preference set `offline` (TRL preference JSONL), with
    identical pairs (same prompt, chosen and rejected; the first kept) and pairs whose chosen and rejected are
    the same text dropped. Returns (pairs, counts)."""
    from evarl.reward_training.data import PreferenceDataError, load_preferences

    rows: list[Pair] = []
    n_offline = 0
    if offline:
        try:
            prefs = load_preferences(offline)
        except PreferenceDataError as e:
            raise DataError(f"solver.offline_pairs: {offline}: {e}") from None
        for i, x in enumerate(prefs):
            pid = f"offline-{x.line or i}"
            rows.append(Pair(pid, x.prompt, x.chosen, x.rejected, meta={"rule": "offline"}))
        n_offline = len(rows)
    for path in paths:
        rows.extend(read_records(path, Pair))
    seen: set[str] = set()
    out: list[Pair] = []
    same = 0
    for p in rows:
        if p.chosen.strip() == p.rejected.strip():
            same += 1
            continue
        k = json.dumps([p.prompt, p.chosen, p.rejected], sort_keys=True, ensure_ascii=False)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out, {
        "pairs_trained": len(out),
        "from_rounds": len(paths),
        "offline_pairs": n_offline,
        "duplicates_dropped": len(rows) - same - len(out),
        "identical_dropped": same,
    }


def best_round(run_dir: Path, rounds: int) -> dict[str, Any] | None:
    """The iterate with the highest held-out mean reward (round 0 = the base policy), with its 95% interval
    over prompts and every round's mean for comparison; None when no round was evaluated. Ties go to the
    earlier round."""
    from evarl.eval.stats import mean_interval

    cands: list[dict[str, Any]] = []
    for t in range(rounds + 1):
        ev = run_dir / f"round-{t:03d}" / "eval.json"
        if not ev.exists():
            continue
        h = read_json(ev).get("heldout") or {}
        iv = (h.get("intervals") or {}).get("mean_reward")
        if iv is None and h.get("per_prompt"):
            iv = mean_interval([v["reward"] for v in h["per_prompt"].values() if v.get("reward") is not None])
        if iv is None and h.get("mean_reward") is not None:
            iv = {"mean": h["mean_reward"], "lo": None, "hi": None, "n": h.get("n")}
        if iv and iv.get("mean") is not None:
            cands.append({"round": t, **iv})
    if not cands:
        return None
    best = max(cands, key=lambda c: (c["mean"], -c["round"]))
    return {**best, "all": [{"round": c["round"], "mean": c["mean"], "n": c["n"]} for c in cands]}


def eval_stage(
    fn: Any, gen: Generator, prompts: list[Prompt], reward: Any, params: SamplingParams, out_dir: Path
) -> dict:
    res = fn(gen, prompts, reward, params, out_dir)
    write_json(out_dir / "eval.json", res)
    h = res.get("heldout", res)
    return {k: h.get(k) for k in ("mean_reward", "n", "failed") if k in h}


# ---------------------------------------------------------------- summary


def summarize(r: Run, cfg: RunConfig, seconds: float) -> dict[str, Any]:
    st = r.manifest["stages"]
    rounds = []
    for t in range(1, cfg.rounds + 1):
        k = f"round-{t:03d}"
        ev = r.dir / k / "eval.json"
        rounds.append(
            {
                "round": t,
                "prompts": st.get(f"{k}/mix", {}).get("counts", {}).get("prompts"),
                "evolved_kept": st.get(f"{k}/evolve", {}).get("counts", {}).get("kept"),
                "pairs": st.get(f"{k}/pairs", {}).get("counts", {}).get("pairs"),
                "train_reward": st.get(f"{k}/train_score", {}).get("counts", {}).get("mean_reward"),
                # share of training responses the reward failed to score (a judge reply without a score)
                "score_failures": failure_rate(st.get(f"{k}/train_score", {}).get("counts", {})),
                "heldout": read_json(ev).get("heldout") if ev.exists() else None,
            }
        )
    base = r.dir / "round-000" / "eval.json"
    base_h = read_json(base).get("heldout") if base.exists() else None
    for rd in rounds:  # each round against the base policy on the same held-out prompts
        rd["vs_base"] = compare_heldout(rd["heldout"], base_h)
    return {
        "run_dir": str(r.dir),
        "seconds_this_invocation": round(seconds, 1),
        "stage_seconds": round(sum(v.get("seconds", 0) for v in st.values()), 1),
        "base_heldout": base_h,
        "rounds": rounds,
        "best_round": best_round(r.dir, cfg.rounds),
    }


def failure_rate(counts: dict[str, Any]) -> dict[str, Any] | None:
    """The failed share of a score stage's responses with its 95% interval and n (None if nothing was scored)."""
    from evarl.eval.stats import mean_interval

    n, failed = counts.get("scored"), counts.get("failed")
    if not n or failed is None:
        return None
    return mean_interval([1.0] * int(failed) + [0.0] * (int(n) - int(failed)))


def compare_heldout(new: dict | None, old: dict | None) -> dict[str, Any] | None:
    """Paired differences (new - old, by prompt) of the held-out reward and prompt-level IFEval accuracy."""
    from evarl.eval.stats import paired_difference

    if not new or not old or "per_prompt" not in new or "per_prompt" not in old:
        return None
    out = {}
    for key in ("reward", "prompt_loose", "prompt_strict"):
        a = {k: v[key] for k, v in new["per_prompt"].items() if v.get(key) is not None}
        b = {k: v[key] for k, v in old["per_prompt"].items() if v.get(key) is not None}
        if set(a) & set(b):
            out[key] = paired_difference(a, b)
    return out


def print_summary(s: dict[str, Any]) -> None:
    from evarl.eval.stats import fmt_interval

    def fmt(h: dict | None) -> str:
        if not h:
            return "-"
        iv = h.get("intervals") or {}
        ife = h.get("ifeval") or {}
        if not iv:  # an eval.json written before intervals existed
            return f"reward {h.get('mean_reward')} (n={h.get('n')})"
        out = f"reward {fmt_interval(iv.get('mean_reward'))}"
        if "prompt_loose" in iv:
            out += f"  {ife.get('benchmark', 'IFEval')} prompt-loose {fmt_interval(iv['prompt_loose'])}"
        return out

    def vs(c: dict | None) -> str:
        if not c:
            return ""
        parts = []
        for key, label in (("reward", "reward"), ("prompt_loose", "prompt-loose")):
            if key in c:
                d = c[key]
                verdict = (
                    ""
                    if d["excludes_zero"] is None
                    else (" (excludes no change)" if d["excludes_zero"] else " (includes no change)")
                )
                parts.append(f"{label} {fmt_interval(d, key='diff')}{verdict}")
        return "\n      vs base, paired by prompt: " + "; ".join(parts) if parts else ""

    lines = ["", f"evarl run finished: {s['run_dir']}  ({s['stage_seconds']:.0f} s of stages)"]
    lines.append("  held-out means with 95% bootstrap intervals over prompts")
    lines.append(f"  base policy      held-out {fmt(s['base_heldout'])}")
    for rd in s["rounds"]:
        lines.append(
            f"  round {rd['round']}: prompts {rd['prompts']}, evolved {rd['evolved_kept']}, pairs {rd['pairs']}, "
            f"held-out {fmt(rd['heldout'])}{vs(rd.get('vs_base'))}"
        )
        if rd.get("score_failures") and rd["score_failures"]["mean"]:
            lines.append(f"      share of training responses not scored {fmt_interval(rd['score_failures'])}")
    b = s.get("best_round")
    if b:
        lines.append(f"  best iterate: round {b['round']} (held-out mean reward {fmt_interval(b)})")
    lines.append(f"  report: {s['run_dir']}/report.html  (per round: round-00t/report.md)")
    print("\n".join(lines), flush=True)


__all__ = ["DataError", "iter_jsonl", "run"]
