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
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from evarl.config import ConfigError, RunConfig, validate_config
from evarl.data_io import (
    DataError,
    iter_jsonl,
    read_jsonl,
    read_prompts,
    read_records,
    write_json,
    write_jsonl,
)
from evarl.generation.base import Generator, GenOutput, Releasable, SamplingParams
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
        if self.pool is not None:
            self.pool.release()
        from evarl.dist import release_memory

        release_memory()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def make_generator(cfg: RunConfig, model_path: str, device: Any = None) -> Generator:
    """The configured backend on ``model_path``, on this process's device, sharded by prompt chunks."""
    from evarl.generation.sharded import ShardedGenerator

    g = cfg.generation
    from evarl.registry import BACKENDS

    if g.backend in ("hf", "hf-static"):
        import evarl.generation.hf  # noqa: F401  (registers both transformers backends)

        gen: Any = BACKENDS.get(g.backend).from_path(
            model_path, g.dtype or cfg.model.dtype, g.batch_size, cfg.model.trust_remote_code, device=device
        )
        return ShardedGenerator(gen, g.chunk_prompts)

    backend = BACKENDS.get(g.backend)
    if hasattr(backend, "from_config"):
        return ShardedGenerator(backend.from_config(cfg, model_path), g.chunk_prompts)
    raise ConfigError([f"generation.backend: {g.backend!r} cannot be built from a config"])


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
        train = read_prompts(t.train_file)[: t.train_prompts]
    else:
        train = default_task.train_prompts(
            t.train_prompts, t.seed, t.min_constraints, t.max_constraints, t.checkers
        )
    if t.heldout_file:
        held = read_prompts(t.heldout_file)[: t.heldout_prompts]
    elif t.name == "default":
        held = default_task.heldout_prompts(t.heldout_prompts, t.checkers)
    else:
        held = []
    return train, held


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


def needs_policy_tokenizer(cfg: RunConfig) -> bool:
    """Token-length shaping (reward.length_unit or a `length` source in tokens) measures with the policy's tokenizer."""
    return cfg.reward.length_unit == "tokens" or any(
        s.name == "length" and s.mode == "tokens" for s in cfg.reward.sources
    )


# ---------------------------------------------------------------- the loop


def run(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    errors = validate_config(cfg)
    if errors:
        raise ConfigError(errors)
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
    from evarl.rewards.sharded import ShardedReward
    from evarl.solver.logprobs import compute_reference_logps
    from evarl.solver.pairs import build_pairs
    from evarl.solver.trainer import train_preference

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
    models = Models(cfg, device)
    r.set("world_size", w.size)
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
                if needs_policy_tokenizer(cfg)
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
    if cfg.eval.enabled and cfg.eval.baseline and heldout:
        r.stage(
            "round-000/eval",
            lambda: eval_stage(
                evaluate_heldout, models.policy(base_path), heldout, reward_for(base_path), eval_params, r0
            ),
            [r0 / "eval.json"],
        )

    prev_prompts_path = seed_path
    policy_path = base_path
    for t in range(1, cfg.rounds + 1):
        rd = r.round_dir(t)
        key = f"round-{t:03d}"
        _log(f"round {t}/{cfg.rounds}: policy {policy_path}")
        x_prev = load_prompts(prev_prompts_path)
        r.stage(
            f"{key}/prompts", lambda: (write_jsonl(rd / "prompts.jsonl", x_prev), {"prompts": len(x_prev)})[1]
        )

        # ---- creator step: estimate, sample, evolve
        if cfg.creator.enabled:
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

            def _info() -> dict[str, Any]:
                rewards = rewards_by_prompt(rd / "scores.jsonl")
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
        else:  # "no evolve" ablation: the solver trains on the previous prompt set every round
            r.stage(
                f"{key}/mix",
                lambda: (write_jsonl(rd / "train_prompts.jsonl", x_prev), {"prompts": len(x_prev)})[1],
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

        def _pairs() -> dict[str, Any]:
            by_id = {p.id: p for p in x_t}
            comps = read_records(rd / "train_generations.jsonl", Completion)
            scores = read_records(rd / "train_scores.jsonl", Scored)
            pairs, skipped = build_pairs(
                solver_cfg.pair_rule, by_id, comps, scores, solver_cfg.min_margin, cfg.seed * 41 + t
            )
            if solver_cfg.rewrite:
                from evarl.solver.rewrite import rewrite_chosen

                pairs = rewrite_chosen(pairs, models.policy(policy_path), cfg.seed * 43 + t, g.max_new_tokens)
            write_jsonl(rd / "pairs.jsonl", pairs)
            return {"pairs": len(pairs), "skipped": skipped}

        r.stage(f"{key}/pairs", _pairs, [rd / "pairs.jsonl"])

        scratch = cfg.creator.mode == "scratch"
        start_path = base_path if scratch else policy_path
        ref_path = base_path if (solver_cfg.reference == "initial" or scratch) else policy_path
        loss = LOSSES.get(solver_cfg.loss)
        needs_ref = getattr(loss, "needs_reference", True)

        def train_pairs() -> list[Pair]:
            rounds = range(1, t + 1) if scratch else [t]
            return [p for k in rounds for p in read_records(r.round_dir(k) / "pairs.jsonl", Pair)]

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
            pairs = train_pairs()
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
            return {k: v for k, v in summary.items() if isinstance(v, int | float | str)}

        r.stage(f"{key}/train", _train, [rd / "train" / "model"])
        if (rd / "train" / "model").exists():  # absent only when the round had no pairs
            policy_path = str(rd / "train" / "model")

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
        prev_prompts_path = rd / "train_prompts.jsonl"

    models.close()
    summary = summarize(r, cfg, time.time() - t_start)
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
                "heldout": json.loads(ev.read_text()).get("heldout") if ev.exists() else None,
            }
        )
    base = r.dir / "round-000" / "eval.json"
    return {
        "run_dir": str(r.dir),
        "seconds_this_invocation": round(seconds, 1),
        "stage_seconds": round(sum(v.get("seconds", 0) for v in st.values()), 1),
        "base_heldout": json.loads(base.read_text()).get("heldout") if base.exists() else None,
        "rounds": rounds,
    }


def print_summary(s: dict[str, Any]) -> None:
    def fmt(h: dict | None) -> str:
        if not h:
            return "-"
        ife = h.get("ifeval") or {}
        return f"reward {h.get('mean_reward', float('nan')):.3f}  {ife.get('benchmark', 'IFEval')} prompt-loose {ife.get('prompt_loose', float('nan')):.3f}"

    lines = ["", f"evarl run finished: {s['run_dir']}  ({s['stage_seconds']:.0f} s of stages)"]
    lines.append(f"  base policy      held-out {fmt(s['base_heldout'])}")
    for rd in s["rounds"]:
        lines.append(
            f"  round {rd['round']}: prompts {rd['prompts']}, evolved {rd['evolved_kept']}, pairs {rd['pairs']}, "
            f"train reward {rd['train_reward']}  held-out {fmt(rd['heldout'])}"
        )
    lines.append(f"  report: {s['run_dir']}/report.html  (per round: round-00t/report.md)")
    print("\n".join(lines), flush=True)


__all__ = ["DataError", "iter_jsonl", "run"]
