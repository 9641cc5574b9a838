"""Tokenisation of (prompt, response) with the policy's chat template, and response-only sequence log-probs.

Tokenisation. The prompt messages are rendered with the tokenizer's chat template and
``add_generation_prompt=True`` (:func:`evarl.chat.render_chat`, the same text the generator saw), the
response is tokenised *separately* and followed by the chat template's end-of-turn token
(:func:`evarl.chat.end_of_turn_id`: SmolLM2/ChatML ``<|im_end|>``, which is also its EOS; Gemma ``<end_of_turn>``, which
is not): the token that ends an assistant turn in the template, and where generation stops. Tokenising the two parts separately avoids
the prompt-is-not-a-prefix problem of tokenising ``prompt + response`` as one string (BPE merges across the
boundary; TRL warns about it).
Truncation: the prompt is fitted to ``max_prompt_length`` tokens by the one policy every generation backend
uses too (:func:`evarl.truncation.encode_prompt`: oldest turns and the beginning of the instruction go; BOS,
system prompt, role tokens, the instruction's end and the assistant header stay), then the response keeps its
first ``max_length - len(prompt)`` tokens.

Log-probs. ``sum_t log pi(y_t | x, y_<t)`` over response tokens only. The decoder runs once over the padded
batch; the LM head is applied only to the hidden states that predict a response token (prompt and padding
positions never reach the ``[tokens, vocab]`` projection), in chunks that are recomputed in the backward pass
when there is more than one, so the full logits tensor is never held. Log-softmax runs in float32.

Prompt sharing (``solver.share_prompt``, default on): chosen and rejected share their prompt, so the prompt
runs through the decoder once and its KV cache is repeated for the two continuations; gradients flow back
through the cache. This removes the second prompt forward/backward of every pair (the prefix-sharing idea of
Wang et al. 2024, "Accelerating direct preference optimization with prefix sharing", done with the model's
own KV cache instead of a custom attention mask). It falls back to one padded sequence per response when the
model has no separable decoder (e.g. wrapped for DDP) or gradient checkpointing is on.

:func:`compute_reference_logps` runs the reference model once over all pairs and returns plain rows, so the
reference is a stage artifact (``ref_logps.jsonl``) and never resident during training.

Device: batches are built on the CPU and moved to the model's device (:func:`evarl.models.loading.device_of`,
the device of its embeddings); every tensor made inside the log-prob functions follows its inputs' device. The
dtype is the model's own; log-softmax runs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from evarl.chat import end_of_turn_id
from evarl.models.loading import device_of
from evarl.truncation import encode_prompt
from evarl.types import Pair

# Rows of hidden states projected through the LM head at once (x vocab x 4 bytes of float32 logits).
LOGITS_CHUNK = 1024


@dataclass
class EncodedPair:
    """Token ids of one pair: shared prompt, and each response (EOS appended, truncated)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def encode_response(tokenizer: Any, response: str, budget: int) -> list[int]:
    """Response ids + the end-of-turn token (:func:`evarl.chat.end_of_turn_id`), keeping the first ``budget``
    tokens (at least one)."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        ids.append(eot)
    return ids[: max(1, budget)]


def encode_pair(
    tokenizer: Any,
    prompt: list[dict[str, str]],
    chosen: str,
    rejected: str,
    max_prompt_length: int,
    max_length: int,
) -> EncodedPair:
    prompt_ids = encode_prompt(tokenizer, prompt, min(max_prompt_length, max_length - 1))
    budget = max_length - len(prompt_ids)
    return EncodedPair(
        prompt_ids, encode_response(tokenizer, chosen, budget), encode_response(tokenizer, rejected, budget)
    )


def encode_pairs(
    tokenizer: Any, pairs: Sequence[Pair], max_prompt_length: int, max_length: int
) -> list[EncodedPair]:
    """Encode every pair (``max_prompt_length < max_length`` is enforced)."""
    if max_length < 2:
        raise ValueError(f"solver.max_length must be >= 2, got {max_length}")
    return [
        encode_pair(tokenizer, p.prompt, p.chosen, p.rejected, max_prompt_length, max_length) for p in pairs
    ]


def collate_sequences(
    prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``response_mask`` (1 on response tokens)."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    t = max(len(s) for s in seqs)
    n = len(seqs)
    input_ids = torch.full((n, t), pad_id, dtype=torch.long)
    attention = torch.zeros((n, t), dtype=torch.long)
    response = torch.zeros((n, t), dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, : len(s)] = 1
        response[i, len(p) : len(s)] = True
    return {"input_ids": input_ids, "attention_mask": attention, "response_mask": response}


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One ``[2B, T]`` batch: rows ``0..B-1`` are the chosen sequences, ``B..2B-1`` the rejected ones."""
    prompts = [e.prompt_ids for e in batch] * 2
    responses = [e.chosen_ids for e in batch] + [e.rejected_ids for e in batch]
    return collate_sequences(prompts, responses, pad_id)


def _backbone_and_head(model: Any) -> tuple[Any, Any] | None:
    get_dec = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if get_dec is None or head is None:
        return None
    try:
        dec = get_dec()
    except (AttributeError, NotImplementedError):
        return None
    if dec is None or dec is model:
        return None
    return dec, head


def _logit_transform(model: Any):
    cfg = getattr(model, "config", None)
    cap = getattr(cfg, "final_logit_softcapping", None) if cfg is not None else None
    scale = getattr(cfg, "logit_scale", None) if cfg is not None else None

    def f(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return f


def _token_logps_chunk(
    hidden: torch.Tensor, targets: torch.Tensor, head: Any, transform: Any
) -> torch.Tensor:
    logits = transform(head(hidden)).float()
    return torch.gather(logits.log_softmax(-1), 1, targets.unsqueeze(1)).squeeze(1)


def _head_logps(sel: torch.Tensor, targets: torch.Tensor, model: Any, head: Any) -> torch.Tensor:
    """log pi(target) for each row of hidden states ``sel`` [N, H], in LM-head chunks (see module docstring)."""
    transform = _logit_transform(model)
    n = sel.shape[0]
    if n <= LOGITS_CHUNK:
        return _token_logps_chunk(sel, targets, head, transform)
    chunks = []
    for s in range(0, n, LOGITS_CHUNK):
        h, tg = sel[s : s + LOGITS_CHUNK], targets[s : s + LOGITS_CHUNK]
        if torch.is_grad_enabled():
            chunks.append(checkpoint(_token_logps_chunk, h, tg, head, transform, use_reentrant=False))
        else:
            chunks.append(_token_logps_chunk(h, tg, head, transform))
    return torch.cat(chunks)


def response_logps(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the response tokens of each row, and the number of response tokens per row.

    Only the hidden states predicting response tokens go through the LM head (see module docstring). Models
    without a separable decoder fall back to a full forward with the logits sliced afterwards.
    """
    target_mask = response_mask[:, 1:]
    targets = input_ids[:, 1:][target_mask]
    rows = target_mask.nonzero(as_tuple=True)[0]
    lengths = target_mask.sum(1)
    parts = _backbone_and_head(model)
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        sel = logits[:, :-1][target_mask].float()
        tok = torch.gather(sel.log_softmax(-1), 1, targets.unsqueeze(1)).squeeze(1)
    else:
        dec, head = parts
        hidden = dec(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        tok = _head_logps(hidden[:, :-1][target_mask], targets, model, head)
    sums = torch.zeros(input_ids.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
    return sums, lengths


# ---------------------------------------------------------------- prompt sharing


def supports_prompt_sharing(model: Any) -> bool:
    """Whether :func:`collate_pairs_shared` batches can run on ``model`` (a plain or PEFT-wrapped decoder-only
    model with a KV cache; not under gradient checkpointing, which disables the cache in training)."""
    if _backbone_and_head(model) is None:
        return False
    gc = getattr(model, "is_activation_checkpointing", None)
    if gc is None:
        gc = getattr(model, "is_gradient_checkpointing", False)
    if gc and model.training:
        return False
    cfg = getattr(model, "config", None)
    return not getattr(cfg, "is_encoder_decoder", False)


def collate_pairs_shared(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """A prompt-sharing batch: each prompt once (left-padded ``[B, P]``), the responses ``[2B, R]``
    (right-padded, interleaved: row ``2i`` is pair i's chosen, ``2i+1`` its rejected)."""
    b = len(batch)
    p = max(len(e.prompt_ids) for e in batch)
    r = max(max(len(e.chosen_ids), len(e.rejected_ids)) for e in batch)
    prompt_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    resp_ids = torch.full((2 * b, r), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((2 * b, r), dtype=torch.bool)
    for i, e in enumerate(batch):
        n = len(e.prompt_ids)
        prompt_ids[i, p - n :] = torch.tensor(e.prompt_ids, dtype=torch.long)
        prompt_mask[i, p - n :] = 1
        for j, ids in enumerate((e.chosen_ids, e.rejected_ids)):
            resp_ids[2 * i + j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            resp_mask[2 * i + j, : len(ids)] = True
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "resp_ids": resp_ids,
        "resp_mask": resp_mask,
    }


def _cache_kwarg(dec: Any) -> str:
    """transformers >= 5.2x names the KV-cache argument ``cache``; earlier versions ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(dec.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _shared_pair_logps(model: Any, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The prompt runs once; its KV cache is repeated for the chosen and the rejected continuation, and the
    gradient flows back through the cache into the prompt's computation (prefix sharing)."""
    dec, head = _backbone_and_head(model)
    pm = b["prompt_mask"]
    p_len = pm.sum(1)
    out = dec(
        input_ids=b["prompt_ids"],
        attention_mask=pm,
        position_ids=(pm.cumsum(1) - 1).clamp(min=0),
        use_cache=True,
    )
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    cache.batch_repeat_interleave(2)
    resp_ids, resp_mask = b["resp_ids"], b["resp_mask"]
    r = resp_ids.shape[1]
    positions = p_len.repeat_interleave(2)[:, None] + torch.arange(r, device=resp_ids.device)[None, :]
    attention = torch.cat([pm.repeat_interleave(2, 0), resp_mask.long()], dim=1)
    hr = dec(
        input_ids=resp_ids,
        attention_mask=attention,
        position_ids=positions,
        use_cache=True,
        **{_cache_kwarg(dec): cache},
    ).last_hidden_state
    # response token 0 is predicted by the prompt's last hidden state, token j by the response's hidden j-1
    pred = torch.cat([out.last_hidden_state[:, -1:].repeat_interleave(2, 0), hr[:, :-1]], dim=1)
    tok = _head_logps(pred[resp_mask], resp_ids[resp_mask], model, head)
    rows = resp_mask.nonzero(as_tuple=True)[0]
    sums = torch.zeros(resp_ids.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
    lengths = resp_mask.sum(1)
    return sums[0::2], sums[1::2], lengths[0::2], lengths[1::2]


def pair_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(chosen_logps, rejected_logps, chosen_lengths, rejected_lengths) for a :func:`collate_pairs` or a
    :func:`collate_pairs_shared` batch."""
    if "prompt_ids" in batch:
        return _shared_pair_logps(model, batch)
    sums, lengths = response_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    b = sums.shape[0] // 2
    return sums[:b], sums[b:], lengths[:b], lengths[b:]


def _pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pid if pid is not None else 0)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for inference passes."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def compute_reference_logps(
    model: Any, tokenizer: Any, pairs: list[Pair], cfg: Any, batch_size: int, progress: bool = False
) -> list[dict]:
    """Reference log-probs of every pair, computed once: ``[{"prompt_id", "chosen_logp", "rejected_logp"}]``.

    Rows come back in the order of ``pairs`` (with ``"pair_index"`` for checking alignment). ``cfg`` is the
    :class:`evarl.config.SolverConfig` (``max_prompt_length``, ``max_length``), so the tokenisation is exactly
    the one the trainer uses.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    enc = encode_pairs(tokenizer, pairs, cfg.max_prompt_length, cfg.max_length)
    pad = _pad_id(tokenizer)
    device = device_of(model)
    was_training = model.training
    model.eval()
    shared = bool(getattr(cfg, "share_prompt", True)) and supports_prompt_sharing(model)
    out: list[dict | None] = [None] * len(pairs)
    batches = length_sorted_batches([e.length for e in enc], batch_size)
    it: Any = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="reference log-probs", unit="batch")
    try:
        for idx in it:
            collate = collate_pairs_shared if shared else collate_pairs
            batch = {k: v.to(device) for k, v in collate([enc[i] for i in idx], pad).items()}
            c, r, _, _ = pair_logps(model, batch)
            for j, i in enumerate(idx):
                cv, rv = float(c[j]), float(r[j])
                if not (math.isfinite(cv) and math.isfinite(rv)):
                    raise FloatingPointError(
                        f"pair {i} ({pairs[i].prompt_id}): non-finite reference log-prob"
                    )
                out[i] = {
                    "prompt_id": pairs[i].prompt_id,
                    "pair_index": i,
                    "chosen_logp": cv,
                    "rejected_logp": rv,
                }
    finally:
        if was_training:
            model.train()
    return [o for o in out if o is not None]
