"""Online eva (seed 001 §3 "Prioritized Generative Buffer", §4 Table 1, appendix A): the creator evolves per
mini-batch while an online solver (RLOO, or online DPO / OAIF with best-vs-worst pairs) trains on-policy.

    for step s = 1..S:
        phase     warm-up (buffer filling) | mix-up (buffer full) | bootstrap (dataset exhausted)
        batch     warm-up: B prompts from D;  mix-up: ratio_evol*B from the buffer by priority + rest from D;
                  bootstrap: B from the buffer
        generate  n responses per prompt with pi_theta (the model being trained)
        score     r(x, y); informativeness A*(x) (A*_avg by default)
        train     one optimizer step: RLOO (leave-one-out baseline, optional KL shaping) or online DPO
        creator   evolve n_new children (n_new_bootstrap in bootstrap) from the top 50% informative prompts,
                  filter, add to the buffer with their parent's priority; pop the trained buffer prompts

Files under `runs/<name>/online/`: `steps.jsonl` (one row per step: phase, rewards, loss, buffer size, ...),
`evolved.jsonl` (every kept child with lineage), `state/` (the engine's checkpoint: weights, optimizer,
schedule, RNG, plus the buffer and dataset pointer; saved every `online.save_every` steps; a rerun resumes
there), `model/` (final policy), and `eval.json` next to the base policy's `round-000/eval.json`. Every random
choice of step s is seeded from (seed, s) alone, so a resumed run repeats exactly what an uninterrupted one does.

Training runs on the shared engine (`evarl.engine`: optimizer, one schedule — constant after
`online.warmup_steps` of linear warm-up —, clipping, mixed precision, checkpoints, the final save). Under
several processes each step's generation, scoring and evolving are sharded by fixed prompt chunks
(`evarl.dist`) and gathered on every rank, so all ranks hold the same batch, buffer and pairs; the loss is split
by prompt (prompt k of the mini-batch on rank k mod N) and each rank's sum is divided by the step's global count
of responses (or pairs), so the all-reduced gradient is exactly the single-process one. Generation uses the
unwrapped policy, which under DDP holds the full weights; FSDP / ZeRO-3 shard them and are refused here.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

from evarl.config import ConfigError, RunConfig, validate_config
from evarl.generation.base import SamplingParams
from evarl.io import read_json, read_jsonl, write_json, write_jsonl
from evarl.runs import Run
from evarl.types import Completion, Prompt, Scored


def _log(msg: str) -> None:
    print(f"[evarl online {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _seq_logps(
    model: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    texts: list[str],
    cfg: Any,
    micro: int,
    device: Any = None,
) -> Any:
    """Summed response log-probs of (prompt, response) sequences, in micro-batches (grad flows if enabled)."""
    import torch

    from evarl.solver.logprobs import collate_sequences, encode_prompt, encode_response, response_logps

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for s in range(0, len(texts), micro):
        ps, rs = [], []
        for p, t in zip(prompts[s : s + micro], texts[s : s + micro]):
            pid = encode_prompt(tokenizer, p.messages, min(cfg.max_prompt_length, cfg.max_length - 1))
            ps.append(pid)
            rs.append(encode_response(tokenizer, t, cfg.max_length - len(pid)))
        b = {k: v.to(device) if device is not None else v for k, v in collate_sequences(ps, rs, pad).items()}
        sums, _ = response_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"])
        out.append(sums)
    return torch.cat(out) if out else torch.zeros(0)


def run_online(cfg: RunConfig, progress: bool = True) -> dict[str, Any]:
    errors = validate_config(cfg)
    if errors:
        raise ConfigError(errors)
    import torch

    from evarl.creator.buffer import GenerativeBuffer, phase
    from evarl.creator.evolve import evolve_prompts
    from evarl.creator.evolve.base import EvolveContext
    from evarl.creator.filters import apply_filters
    from evarl.creator.informativeness import informativeness
    from evarl.creator.sampling import sample_prompts
    from evarl.dist import init, is_main, main_first, resolve_device
    from evarl.engine import Engine, TrainSettings, check_finite_step, content_hash, save_hf_model
    from evarl.eval.heldout import evaluate_heldout
    from evarl.generation.hf import HFGenerator
    from evarl.generation.sharded import ShardedGenerator
    from evarl.loop import eval_stage, policy_with_chat_template, seed_stage
    from evarl.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from evarl.registry import LOSSES
    from evarl.rewards import build_reward
    from evarl.rewards.sharded import ShardedReward
    from evarl.solver.losses import LossInputs
    from evarl.solver.pairs import build_pairs
    from evarl.solver.rloo import rloo_loss
    from evarl.solver.trainer import build_policy
    from evarl.tracking import heldout_metrics, open_run_tracker, track_round

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    o, g, sc = cfg.online, cfg.generation, cfg.solver
    w = init()
    device = resolve_device(cfg.device)
    if o.batch_prompts < w.size:
        raise ConfigError([f"online.batch_prompts: {o.batch_prompts} prompts cannot feed {w.size} processes"])
    r = Run(cfg).open()
    tracker = open_run_tracker(cfg, r, is_main())  # one tracker run for the whole run (evarl.tracking)
    out = r.dir / "online"
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
    with main_first():
        base_path = resolve_model_path(cfg.model.path, cfg.model.gguf_file)
        if cfg.model.chat_template:  # the policy tokenizer everywhere renders with it
            base_path = policy_with_chat_template(cfg, base_path, r.dir)
    tok = load_tokenizer(base_path, cfg.model.trust_remote_code)

    seed_path, held_path = seed_stage(r, cfg)
    dataset = [Prompt.from_dict(x) for x in read_jsonl(seed_path)]
    heldout = [Prompt.from_dict(x) for x in read_jsonl(held_path)]
    order = list(range(len(dataset)))
    random.Random(f"online-order|{cfg.seed}").shuffle(order)
    eval_params = SamplingParams(1, cfg.eval.temperature, g.top_p, cfg.eval.max_new_tokens, cfg.seed)

    def reward_for(gen: Any) -> Any:
        self_judge = any(
            s.name in ("judge", "pairwise") and s.model in (None, "policy") for s in cfg.reward.sources
        )
        rew = build_reward(
            cfg.reward, policy=gen if self_judge else None, policy_tokenizer=tok, device=device
        )
        return ShardedReward(rew, g.chunk_prompts)

    if cfg.eval.enabled and cfg.eval.baseline and heldout:
        r0 = r.round_dir(0)

        def _base_eval() -> dict[str, Any]:
            gen = HFGenerator.from_path(
                base_path,
                g.dtype or cfg.model.dtype,
                g.batch_size,
                cfg.model.trust_remote_code,
                device=device,
            )
            gen = ShardedGenerator(gen, g.chunk_prompts)
            return eval_stage(evaluate_heldout, gen, heldout, reward_for(gen), eval_params, r0)

        r.stage("round-000/eval", _base_eval, [r0 / "eval.json"])
    track_round(r, tracker, 0)

    if not r.done("online/train"):
        engine = Engine(
            TrainSettings.from_config(
                sc,
                learning_rate=o.learning_rate,
                scheduler="constant",
                warmup_steps=o.warmup_steps,
                save_every=o.save_every,
            ),
            cfg.seed,
            device,
        )
        if engine.sharded:
            raise ConfigError(
                ["online: the online loop generates with the policy it trains and needs whole weights on every "
                 "process; launch it with DDP (configs/accelerate/ddp.yaml) or ZeRO-2, not FSDP / ZeRO-3"]
            )  # fmt: skip
        vgen = None
        if g.backend == "vllm":  # a separate sampler: built before the trainer takes accelerator memory
            if sc.lora.enabled:
                raise ConfigError(
                    ["solver.lora: online training with generation.backend=vllm syncs full weights after each "
                     "update; LoRA adapters are not pushed to the engine (use backend hf, or no LoRA)"]
                )  # fmt: skip
            from evarl.generation.vllm_backend import VLLMGenerator

            vgen = VLLMGenerator.from_config(cfg, base_path)
        policy = build_policy(base_path, sc, cfg.model.trust_remote_code)
        policy.config.use_cache = True  # with the hf backend the same model generates
        model = engine.prepare(policy, o.steps)
        sampler = vgen if vgen is not None else HFGenerator(engine.unwrap(), tok, g.batch_size)
        gen = ShardedGenerator(sampler, g.chunk_prompts)
        reward = reward_for(gen)
        ref = None
        if (o.solver == "rloo" and o.kl_coef > 0) or (
            o.solver == "online_dpo" and getattr(LOSSES.get(sc.loss), "needs_reference", True)
        ):
            ref = load_causal_lm(
                base_path, cfg.model.dtype, cfg.model.trust_remote_code, device=device
            ).eval()
        buffer = GenerativeBuffer(o.buffer_size)
        start, pointer = 0, 0
        state = out / "state"
        fp = content_hash(
            {"online": dataclasses.asdict(o), "solver": dataclasses.asdict(sc), "seed": cfg.seed}
        )
        meta = engine.load_checkpoint(state, fp)
        if meta is not None:
            buffer = GenerativeBuffer.from_rows(o.buffer_size, read_jsonl(Path(meta["dir"]) / "buffer.jsonl"))
            start, pointer = int(meta["step"]), int(meta["pointer"])
            _log(f"resuming at step {start + 1} from {meta['dir']}")
            if vgen is not None:
                vgen.sync_weights(engine.unwrap().named_parameters())
            _truncate_jsonl(out / "steps.jsonl", start)
            _truncate_jsonl(out / "evolved.jsonl", start, key="online_step")
        r.mark_running("online/train")
        rank, nproc = engine.rank, engine.num_processes
        t0 = time.time()
        from tqdm import tqdm

        bar = tqdm(
            range(start, o.steps),
            desc="online eva",
            unit="step",
            disable=not (progress and is_main()),
            initial=start,
            total=o.steps,
        )
        for step in bar:
            s = step + 1
            rng = random.Random(f"online|{cfg.seed}|{s}")
            ph = phase(buffer, len(dataset) - pointer)
            if ph == "bootstrap" and len(buffer) == 0:
                _log(f"step {s}: dataset exhausted and buffer empty; stopping early")
                break
            n_buf = {
                "warmup": 0,
                "mixup": round(o.batch_prompts * o.ratio_evol),
                "bootstrap": o.batch_prompts,
            }[ph]
            from_buf = buffer.sample(n_buf, rng) if n_buf else []
            n_d = min(o.batch_prompts - len(from_buf), len(dataset) - pointer)
            batch = from_buf + [dataset[order[i]] for i in range(pointer, pointer + n_d)]
            pointer += n_d

            # ---- solver: generate on-policy, score, one optimizer step
            params = SamplingParams(g.n, g.temperature, g.top_p, g.max_new_tokens, cfg.seed * 7919 + s)
            outs = gen.generate([p.messages for p in batch], params)
            flat_p = [p for p, row in zip(batch, outs) for _ in row]
            flat_t = [x.text for row in outs for x in row]
            res = reward.score(flat_p, flat_t)
            comps = [
                Completion(p.id, j, x.text, x.num_tokens, x.finish_reason)
                for p, row in zip(batch, outs)
                for j, x in enumerate(row)
            ]
            scores = [
                Scored(c.prompt_id, c.index, None if rr.failed else float(rr.score), rr.failed)
                for c, rr in zip(comps, res)
            ]
            by_prompt: dict[str, list[float]] = {}
            for sc_ in scores:
                if sc_.reward is not None:
                    by_prompt.setdefault(sc_.prompt_id, []).append(sc_.reward)
            info = informativeness(o.metric, by_prompt)

            model.train()
            gid = {p.id: k for k, p in enumerate(batch)}  # prompt k of the mini-batch trains on rank k mod N
            metrics: dict[str, float] = {}
            trained = False
            if o.solver == "rloo":
                keep_all = [i for i, x in enumerate(scores) if x.reward is not None]
                keep = [i for i in keep_all if gid[flat_p[i].id] % nproc == rank]
                if keep_all:
                    pids = [flat_p[i] for i in keep]
                    texts = [flat_t[i] for i in keep]
                    group_t = torch.tensor([gid[p.id] for p in pids], dtype=torch.long)
                    rew = torch.tensor([scores[i].reward for i in keep], dtype=torch.float32)
                    with engine.autocast():
                        logps = _seq_logps(model, tok, pids, texts, sc, sc.batch_size, engine.device)
                    ref_lp = None
                    if ref is not None:
                        with torch.no_grad():
                            ref_lp = _seq_logps(ref, tok, pids, texts, sc, sc.batch_size, engine.device)
                    loss, m = rloo_loss(logps, rew.to(logps.device), group_t.to(logps.device),
                                        ref_lp, o.kl_coef)  # fmt: skip
                    # local mean -> this rank's share of the global mean (DDP averages over the N ranks)
                    share = len(keep) * nproc / len(keep_all)  # the mean over ranks of share x local = global
                    engine.backward(loss * share)
                    metrics = {
                        "loss": share * float(loss.detach()),
                        **{k: share * float(v) for k, v in m.items()},
                    }
                    trained = True
            else:
                pairs_all, _ = build_pairs(
                    sc.pair_rule, {p.id: p for p in batch}, comps, scores, sc.min_margin, cfg.seed * 31 + s
                )
                pairs = [x for x in pairs_all if gid[x.prompt_id] % nproc == rank]
                if pairs_all:
                    pp = [Prompt(x.prompt_id, x.prompt) for x in pairs]
                    dev = engine.device
                    with engine.autocast():
                        lc = _seq_logps(model, tok, pp, [x.chosen for x in pairs], sc, sc.batch_size, dev)
                        lr_ = _seq_logps(model, tok, pp, [x.rejected for x in pairs], sc, sc.batch_size, dev)
                    rc = rr_ = None
                    if ref is not None:
                        with torch.no_grad():
                            rc = _seq_logps(ref, tok, pp, [x.chosen for x in pairs], sc, sc.batch_size, dev)
                            rr_ = _seq_logps(
                                ref, tok, pp, [x.rejected for x in pairs], sc, sc.batch_size, dev
                            )
                    lens_c = torch.tensor(
                        [max(1, len(tok(x.chosen, add_special_tokens=False)["input_ids"]) + 1) for x in pairs]
                    )
                    lens_r = torch.tensor(
                        [
                            max(1, len(tok(x.rejected, add_special_tokens=False)["input_ids"]) + 1)
                            for x in pairs
                        ]
                    )
                    lens_c, lens_r = lens_c.to(lc.device), lens_r.to(lc.device)
                    loss, m = LOSSES.get(sc.loss)(
                        LossInputs(lc.float(), lr_.float(), lens_c, lens_r, rc, rr_), sc
                    )
                    share = len(pairs) * nproc / len(pairs_all)
                    engine.backward(loss * share)
                    metrics = {
                        "loss": share * float(loss.detach()),
                        "pairs": len(pairs_all),
                        **{k: share * float(v) for k, v in m.items()},
                    }
                    trained = True
            lr = engine.scheduler.get_last_lr()[0]
            if trained:
                upd = engine.step()  # clip, update (never with a non-finite gradient), schedule
                metrics = {**engine.mean({k: v for k, v in metrics.items() if k != "pairs"}),
                           **({"pairs": metrics["pairs"]} if "pairs" in metrics else {})}  # fmt: skip
                check_finite_step(metrics.get("loss"), upd, s, f"online {o.solver}", state)
                if vgen is not None:  # push the update to the sampler and check it took
                    metrics["logp_gap"] = _sync_sampler(vgen, engine.unwrap(), tok, batch, outs, g)
            model.eval()

            # ---- creator: evolve the most informative prompts of this mini-batch into the buffer
            top = sample_prompts("greedy", info, o.evolve_top_fraction, cfg.seed + s) if info else []
            parents = [p for p in batch if p.id in set(top)]
            kept: list[Prompt] = []
            if cfg.creator.enabled and parents:
                c = cfg.creator
                ctx = EvolveContext.from_config(
                    c, gen, round=s, seed=cfg.seed * 1009 + s, checkers=cfg.task.checkers
                )
                ctx.num_children = o.n_new_bootstrap if ph == "bootstrap" else o.n_new
                children = evolve_prompts(parents, c.methods, ctx) if ctx.num_children > 0 else []
                pool = batch + [it.prompt for it in buffer.items]
                kept, dropped = apply_filters(
                    children, pool, c.filters, c.max_prompt_chars, c.near_dup_threshold
                )
                if is_main():
                    with open(out / "evolved.jsonl", "a", encoding="utf-8") as f:
                        for ch in kept:
                            f.write(json.dumps({**ch.to_dict(), "online_step": s}, ensure_ascii=False) + "\n")
            popped = buffer.pop({p.id for p in from_buf})
            evicted = buffer.add(kept, [info.get(p.parent_id or "", 0.0) for p in kept], s)
            ok = [x.reward for x in scores if x.reward is not None]
            row = {
                "step": s,
                "phase": ph,
                "from_buffer": len(from_buf),
                "from_dataset": n_d,
                "mean_reward": sum(ok) / len(ok) if ok else None,
                "failed": sum(x.failed for x in scores),
                "mean_info": sum(info.values()) / len(info) if info else None,
                "evolved_kept": len(kept),
                "buffer": len(buffer),
                "popped": popped,
                "evicted": evicted,
                "lr": lr,
                **metrics,
            }
            if is_main():
                with open(out / "steps.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            tracker.log_online(row)  # online/... against the step (process 0 only)
            bar.set_postfix(phase=ph, reward=f"{row['mean_reward'] or 0:.3f}", buffer=len(buffer))
            if s % o.save_every == 0 or s == o.steps:
                rows = buffer.to_rows()
                engine.save_checkpoint(
                    state,
                    s,
                    {"fingerprint": fp, "pointer": pointer},
                    extra=lambda d, rows=rows: write_jsonl(d / "buffer.jsonl", rows),
                )

        final = out / "model"
        adapter = out / "adapter" if sc.lora.enabled and sc.lora.save_adapter else None
        engine.save_model(final, lambda m, sd, tmp: save_hf_model(m, sd, tmp, tok, adapter))
        steps = read_jsonl(out / "steps.jsonl") if (out / "steps.jsonl").exists() else []
        counts = {"steps": len(steps), "buffer": len(buffer)}
        r.finish("online/train", counts, time.time() - t0, [final])  # a deleted model/ is noticed on reopen
        engine.close()
        del model, gen, ref

    final = out / "model"
    if cfg.eval.enabled and heldout:

        def _final_eval() -> dict[str, Any]:
            gen = HFGenerator.from_path(str(final), g.dtype or cfg.model.dtype, g.batch_size, device=device)
            gen = ShardedGenerator(gen, g.chunk_prompts)
            return eval_stage(evaluate_heldout, gen, heldout, reward_for(gen), eval_params, out)

        r.stage("online/eval", _final_eval, [out / "eval.json"])
    if tracker.backends:  # the trained policy's held-out numbers as round 1 (round 0: the base policy)
        r.stage(
            "online/track",
            lambda: {"logged": tracker.log_round(1, {"heldout": heldout_metrics(out / "eval.json")})},
        )
    tracker.close()
    from evarl.model_card import finish_model

    finish_model(r, cfg, final, log=_log)  # <run>/model/ with its model card (and the upload)
    steps = read_jsonl(out / "steps.jsonl") if (out / "steps.jsonl").exists() else []
    base = r.dir / "round-000" / "eval.json"
    summary = {
        "run_dir": str(r.dir),
        "steps": len(steps),
        "phases": {ph: sum(x["phase"] == ph for x in steps) for ph in ("warmup", "mixup", "bootstrap")},
        "base_heldout": read_json(base).get("heldout") if base.exists() else None,
        "final_heldout": read_json(out / "eval.json").get("heldout")
        if (out / "eval.json").exists()
        else None,
    }
    write_json(r.dir / "summary.json", summary)
    b, f_ = summary["base_heldout"] or {}, summary["final_heldout"] or {}
    if is_main():
        print(
            f"\nevarl online run finished: {r.dir}\n  steps {summary['steps']} {summary['phases']}\n"
            f"  held-out reward: base {b.get('mean_reward')}  ->  online eva {f_.get('mean_reward')}",
            flush=True,
        )
    return summary


def _sync_sampler(vgen: Any, model: Any, tok: Any, batch: list[Prompt], outs: list, g: Any) -> float:
    """Sync the trainer's weights into the vLLM sampler, then compare the two models' per-token log-probs on a
    few of this step's samples: the mean |delta log p| should be ~0 after a sync; above
    ``generation.logp_gap_warn`` the sampler is generating with stale weights (the online-RLHF bug)."""
    from evarl.generation.sync import check_after_sync

    vgen.sync_weights(model.named_parameters())
    prompt_ids = vgen.encode([p.messages for p in batch], g.max_new_tokens)
    ps = [prompt_ids[i] for i, row in enumerate(outs) for _ in row]
    rs = [list(x.token_ids or []) for row in outs for x in row]
    gap, warning = check_after_sync(vgen, model, tok, ps, rs, g.logp_gap_warn, max_sequences=4)
    if warning:
        _log(warning)
    return gap


def _truncate_jsonl(path: Path, step: int, key: str = "step") -> None:
    """Drop rows written after the last saved state (they are recomputed identically)."""
    if not path.exists():
        return
    rows = [x for x in read_jsonl(path) if int(x.get(key, 0)) <= step]
    write_jsonl(path, rows)
