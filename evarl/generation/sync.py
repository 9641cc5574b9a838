"""Sampler/trainer weight-sync check for online training with a separate sampling engine (vLLM).

When the sampler is not the trained module itself (``generation.backend=vllm``), the trainer pushes its weights
into the engine after every optimizer step (:meth:`evarl.generation.vllm_backend.VLLMGenerator.sync_weights`).
If that push silently misses (a renamed parameter, a LoRA that was not merged, a stale prefix cache, an engine
that kept its own copy) the policy keeps sampling from old weights while the trainer believes it is on-policy —
the stale-weights bug reported by TRL and OpenRLHF users. The check here is cheap and direct: score a few
sequences under both and compare per-token log-probs.

    gap = mean over all response tokens t of the chosen sequences of |log p_sampler(y_t) - log p_trainer(y_t)|

Right after a correct sync the only difference is numerics (bf16 kernels, fused attention), typically
< 0.01-0.05 nats per token; a missed sync after a real update gives a gap of the size of the update's effect.
``generation.logp_gap_warn`` (default 0.1) is the warning threshold.

Pure functions (:func:`logp_gap`, :func:`check_sync`), the trainer side (:func:`trainer_token_logps`) and one
helper that does the whole check against a sampler exposing ``token_logps`` (:func:`check_after_sync`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def logp_gap(sampler_logps: Sequence[Sequence[float]], trainer_logps: Sequence[Sequence[float]]) -> float:
    """Mean |Δ log-prob| per token, pooled over all tokens of all sequences (a long sequence weighs more).

    Both arguments hold one list of per-token log-probs per sequence, aligned token by token. NaN when there
    is no token to compare. Raises ValueError when the shapes differ (that is a bug, not a gap).
    """
    if len(sampler_logps) != len(trainer_logps):
        raise ValueError(
            f"logp_gap: {len(sampler_logps)} sampler sequences vs {len(trainer_logps)} trainer ones"
        )
    total, n = 0.0, 0
    for i, (a, b) in enumerate(zip(sampler_logps, trainer_logps)):
        if len(a) != len(b):
            raise ValueError(f"logp_gap: sequence {i} has {len(a)} sampler tokens vs {len(b)} trainer tokens")
        total += sum(abs(float(x) - float(y)) for x, y in zip(a, b))
        n += len(a)
    return total / n if n else math.nan


def check_sync(gap: float, warn_above: float) -> str | None:
    """The warning text when ``gap`` exceeds ``warn_above`` (``generation.logp_gap_warn``), else None."""
    if math.isnan(gap) or gap <= warn_above:
        return None
    return (
        f"sampler and trainer disagree after the weight sync: mean |Δ log-prob| = {gap:.4f} per token "
        f"> generation.logp_gap_warn = {warn_above:g}. The sampling engine is probably generating from stale "
        "weights (a parameter the engine did not load, a LoRA not merged, or a cached prefix), so the online "
        "updates are off-policy."
    )


def trainer_token_logps(
    model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]
) -> list[list[float]]:
    """log p(y_t | x, y_<t) of every given response token under ``model``, one list per sequence.

    One right-padded batch on the model's device (:func:`evarl.models.loading.device_of`), no gradients, full
    forward (so the model's own logit soft-capping / scaling is applied), log-softmax in float32. The summed
    rows equal :func:`evarl.solver.logprobs.response_logps` on the same ids. The model's train/eval mode is
    restored afterwards.
    """
    import torch

    from evarl.models.loading import device_of
    from evarl.solver.logprobs import collate_sequences

    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts vs {len(response_ids)} responses")
    if not prompt_ids:
        return []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = collate_sequences([list(p) for p in prompt_ids], [list(r) for r in response_ids], int(pad or 0))
    dev = device_of(model)
    ids, att, resp = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "response_mask"))
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
            lp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    finally:
        if was_training:
            model.train()
    mask = resp[:, 1:]
    return [lp[i][mask[i]].tolist() for i in range(ids.shape[0])]


def check_after_sync(
    sampler: Any,
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    response_ids: Sequence[list[int]],
    warn_above: float,
    max_sequences: int = 4,
) -> tuple[float, str | None]:
    """Score the first ``max_sequences`` (prompt, response) id pairs under the sampler
    (``sampler.token_logps``) and the trainer; return (gap, warning or None)."""
    keep = [(list(p), list(r)) for p, r in zip(prompt_ids, response_ids) if r][:max_sequences]
    if not keep:
        return math.nan, None
    ps, rs = [p for p, _ in keep], [r for _, r in keep]
    gap = logp_gap(sampler.token_logps(ps, rs), trainer_token_logps(model, tokenizer, ps, rs))
    return gap, check_sync(gap, warn_above)
