"""Held-out evaluation of a policy each round: generate, score with the run's reward source, IFEval accuracy.

This is the "evaluate" stage of the loop (DESIGN.md) and the numbers the report plots per round (round 0 =
the base policy θ_0, as in the eva tables of seed 001 §4). It reports, for one response per prompt by default
(greedy when the temperature is 0):

- the reward statistics under the run's reward source (`evarl.eval.stats.reward_stats`), failed items counted
  apart;
- IFEval's four accuracies over the prompts' verifiable constraints (`evarl.eval.ifeval`), None if no prompt
  carries constraints; IFBench constraints are scored the same way and named in `ifeval.benchmark` (with a
  per-benchmark breakdown when a set mixes both);
- the mean response length (tokens, and characters) and the reward-length Pearson coefficient (seed 003 §2.2,
  Figure 3), since the reward hacking this loop must avoid shows up first as longer answers.

The stage is a pure function of its inputs: the same generator, prompts, reward and sampling parameters write
byte-identical `eval_generations.jsonl` and `eval.json` (atomic writes, sorted keys), so a resumed run that
repeats it changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evarl.eval.ifeval import (
    benchmark_label,
    by_benchmark,
    check_prompt,
    ifeval_metrics,
    per_instruction_accuracy,
)
from evarl.eval.stats import mean_interval, pearson, ratio_interval, reward_stats
from evarl.generation.base import Generator, SamplingParams
from evarl.io import write_json, write_jsonl
from evarl.rewards.base import RewardSource
from evarl.types import Completion, Prompt

GENERATIONS_FILE = "eval_generations.jsonl"
EVAL_FILE = "eval.json"


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(info, sort_keys=True)
        return info
    except (TypeError, ValueError):
        return {k: v if isinstance(v, int | float | str | bool | None) else repr(v) for k, v in info.items()}


def prompt_level(
    completions: list[Completion], rewards: list[float | None], checks: list[list[Any]]
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, Any]]]:
    """Per-prompt numbers (the mean over a prompt's samples) and the intervals over prompts.

    per_prompt[prompt_id] = {"reward", "prompt_strict", "prompt_loose"} (None where undefined) is what paired
    comparisons between rounds read (keyed by prompt id, so two rounds pair up prompt by prompt)."""
    by: dict[str, list[int]] = {}
    for i, c in enumerate(completions):
        by.setdefault(c.prompt_id, []).append(i)
    per_prompt: dict[str, dict[str, float | None]] = {}
    inst: dict[str, tuple[float, float, float]] = {}  # strict passes, loose passes, instructions
    for pid, idx in by.items():
        rs = [rewards[i] for i in idx if rewards[i] is not None]
        row: dict[str, float | None] = {"reward": sum(rs) / len(rs) if rs else None}
        cks = [checks[i] for i in idx if checks[i]]
        for key in ("strict", "loose"):
            row[f"prompt_{key}"] = (
                sum(all(getattr(x, key) for x in ck) for ck in cks) / len(cks) if cks else None
            )
        if cks:
            inst[pid] = (
                sum(x.strict for ck in cks for x in ck),
                sum(x.loose for ck in cks for x in ck),
                sum(len(ck) for ck in cks),
            )
        per_prompt[pid] = row

    def col(key: str) -> list[float]:
        return [float(v[key]) for v in per_prompt.values() if v[key] is not None]

    intervals: dict[str, dict[str, Any]] = {"mean_reward": mean_interval(col("reward"))}
    if inst:
        intervals["prompt_strict"] = mean_interval(col("prompt_strict"))
        intervals["prompt_loose"] = mean_interval(col("prompt_loose"))
        s_, l_, n_ = zip(*inst.values())
        intervals["inst_strict"] = ratio_interval(s_, n_)
        intervals["inst_loose"] = ratio_interval(l_, n_)
    return per_prompt, intervals


def evaluate_heldout(
    generator: Generator,
    prompts: list[Prompt],
    reward: RewardSource,
    params: SamplingParams,
    out_dir: Path,
) -> dict[str, Any]:
    """Evaluate `generator` on held-out `prompts`; writes out_dir/eval_generations.jsonl and out_dir/eval.json.

    Returns the eval.json dict: {"heldout": {"mean_reward", "reward_std", "n", "failed", "ifeval":
    {"prompt_strict", "prompt_loose", "inst_strict", "inst_loose"} | None, "mean_length",
    "reward_length_pearson", ...}}.
    """
    if not prompts:
        raise ValueError("evaluate_heldout: no held-out prompts")
    out_dir = Path(out_dir)
    outs = generator.generate([p.messages for p in prompts], params)
    if len(outs) != len(prompts):
        raise RuntimeError(
            f"generator {generator.name!r} returned {len(outs)} results for {len(prompts)} prompts"
        )
    flat_prompts: list[Prompt] = []
    completions: list[Completion] = []
    for p, samples in zip(prompts, outs):
        for j, g in enumerate(samples):
            flat_prompts.append(p)
            completions.append(Completion(p.id, j, g.text, g.num_tokens, g.finish_reason))
    texts = [c.text for c in completions]
    results = reward.score(flat_prompts, texts)
    if len(results) != len(texts):
        raise RuntimeError(
            f"reward {reward.name!r} returned {len(results)} results for {len(texts)} responses"
        )

    has_constraints = any(p.constraints for p in prompts)
    checks = [check_prompt(p, t) if p.constraints else [] for p, t in zip(flat_prompts, texts)]

    rows = []
    for c, r, ch in zip(completions, results, checks):
        row = c.to_dict()
        row.update(
            reward=None if r.failed else float(r.score),
            failed=bool(r.failed),
            reward_info=_jsonable(r.info),
            ifeval=[
                {
                    "id": x.instruction_id,
                    "strict": x.strict,
                    "loose": x.loose,
                    **({"error": x.error} if x.error else {}),
                }
                for x in ch
            ],
        )
        rows.append(row)
    write_jsonl(out_dir / GENERATIONS_FILE, rows, sort_keys=True)

    rewards = [None if r.failed else float(r.score) for r in results]
    failed = [bool(r.failed) for r in results]
    rs = reward_stats(rewards, failed)
    ok = [i for i, f in enumerate(failed) if not f]
    lengths = [c.num_tokens for c in completions]
    ifeval = None
    if has_constraints:
        m = ifeval_metrics(checks)
        ifeval = {k: m[k] for k in ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")}
        ifeval.update(n_prompts=m["n_prompts"], n_instructions=m["n_instructions"])
        ifeval["benchmark"] = benchmark_label(checks)
        if "+" in ifeval["benchmark"]:  # a mix of IFEval and IFBench checkers: each one's numbers too
            ifeval["by_benchmark"] = by_benchmark(checks)
    per_prompt, intervals = prompt_level(completions, rewards, checks)
    heldout = {
        "mean_reward": rs["mean"],
        "reward_std": rs["std"],
        "n": rs["n"],
        "failed": rs["failed"],
        "ifeval": ifeval,
        "mean_length": sum(lengths) / len(lengths),
        "mean_chars": sum(len(t) for t in texts) / len(texts),
        "length_unit": "tokens",
        "truncated": sum(1 for c in completions if c.finish_reason == "length"),
        "reward_length_pearson": pearson([rewards[i] for i in ok], [lengths[i] for i in ok]),  # type: ignore[misc]
        "reward_stats": rs,
        # 95% bootstrap intervals over prompts ({"mean", "lo", "hi", "n"}); instruction-level accuracies
        # resample prompts too (their instructions stay together)
        "intervals": intervals,
        "per_prompt": per_prompt,
        "ifeval_by_instruction": per_instruction_accuracy(checks) if has_constraints else None,
        "n_prompts": len(prompts),
        "samples_per_prompt": params.n,
        "sampling": {
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
            "seed": params.seed,
        },
        "generator": getattr(generator, "name", type(generator).__name__),
        "reward": getattr(reward, "name", type(reward).__name__),
    }
    result = {"heldout": heldout}
    write_json(out_dir / EVAL_FILE, result, sort_keys=True)
    return result
