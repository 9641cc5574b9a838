"""A KV-cache decode loop for the `hf` backend: one prefill per prompt, per-sequence sampling, finished rows leave.

transformers' ``generate`` on a static batch (the ``hf-static`` backend) pads every prompt to the longest,
prefills each prompt n times (``num_return_sequences`` repeats the input before the prefill) and keeps every row
computing until the longest sample ends. This loop instead

1. sorts the prompts of a call by token length and packs them into batches of at most ``batch_rows`` rows
   (prompts x n), so similar lengths share a batch and padding is small;
2. prefills each prompt ONCE (left padding, ``position_ids`` from the attention mask as ``generate`` computes
   them, logits of the last position only) and repeats its KV cache n times (``Cache.batch_repeat_interleave``);
3. decodes one token per row per step; a row that emits a stop token leaves the batch, its KV cache rows are
   dropped (``Cache.batch_select_indices``) and padding columns nobody needs any more are cut from the left.

transformers' own continuous batching (``generate_batch``, paged attention) was measured against this loop on
the default round's workload (2-core AVX512-BF16 CPU, bf16, 16 prompts x 4 x 96 tokens, one process): 92 tok/s
with its default settings and 109 tok/s tuned (page_size 32, max_batch_tokens 512), against 257 tok/s for this
loop in the same run, so it is not used here.

Sampling (:func:`sample_next`) is the same distribution as ``generate(do_sample=True, temperature=T, top_p=p,
top_k=0)``: softmax(logits / T) restricted to the smallest set of most likely tokens whose mass reaches p (a
token is kept while the mass before it is < p, HF's ``TopPLogitsWarper``). Randomness is PER SEQUENCE: sample j
of the prompt at position i of the call draws one uniform per step from its own generator, seeded from
``(seed, i, j)`` (:func:`sequence_seed`), and takes the token by inverse CDF. So a sample does not depend on how
the call was packed into batches or on which other prompts share the call (up to floating-point differences
between batch shapes, which could flip a token only when a uniform falls within rounding error of a CDF
boundary). Temperature 0 is greedy (argmax, as ``generate``), one answer per prompt.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# candidates examined for the nucleus before falling back to a full sort of the vocabulary
_TOPK_FIRST = 64


def sequence_seed(seed: int, i: int, j: int) -> int:
    """The generator seed of sample j of the prompt at position i of a call (63 bits, well mixed)."""
    h = hashlib.blake2b(f"evarl-sample/{seed}/{i}/{j}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def sequence_uniforms(seed: int, i: int, j: int, steps: int) -> Any:
    """``steps`` uniforms in [0, 1) (float64) for one sequence: the t-th decides its t-th token."""
    g = torch.Generator(device="cpu")
    g.manual_seed(sequence_seed(seed, i, j))
    return torch.rand(steps, generator=g, dtype=torch.float64)


def sample_next(logits: Any, u: Any, temperature: float, top_p: float) -> Any:
    """One token per row from ``logits`` [B, V]: greedy if ``temperature <= 0``, else softmax(logits / T)
    restricted to the top-p nucleus, inverted at the row's uniform ``u`` [B].

    The nucleus is found among the most likely tokens (a top-k, widened to a full sort only for the rows whose
    nucleus is wider); it is every token at least as likely as its least likely member. The inverse CDF then runs
    in vocabulary order, not in probability order: a tiny change of the logits (another batch shape, padding)
    moves the CDF's steps a tiny bit instead of reordering near-equal tokens, so a sample changes only when its
    uniform falls within rounding error of a step."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    vocab = probs.shape[-1]
    if top_p < 1.0:
        edge = torch.empty(probs.shape[0], dtype=probs.dtype, device=probs.device)
        rows = torch.arange(probs.shape[0], device=probs.device)
        k = min(_TOPK_FIRST, vocab)
        while rows.numel():
            sub = probs[rows]
            vals = (
                torch.sort(sub, dim=-1, descending=True)[0] if k >= vocab else torch.topk(sub, k, dim=-1)[0]
            )
            cum = vals.cumsum(dim=-1)
            # the nucleus lies inside these k candidates iff their total mass reaches top_p
            done = (cum[:, -1] >= top_p) | (k >= vocab)
            size = ((cum - vals) < top_p).sum(dim=-1).clamp_(min=1)  # kept while the mass before is < top_p
            d = done.nonzero().squeeze(-1)
            edge[rows[d]] = vals[d].gather(1, (size[d] - 1).unsqueeze(-1)).squeeze(-1)
            rows = rows[~done]
            k = min(vocab, k * 16)
        probs = probs * (probs >= edge.unsqueeze(-1))
    cdf = probs.double().cumsum(dim=-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=vocab - 1)


def decode(
    model: Any,
    prompts: list[list[int]],
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    stop_ids: list[int],
    pad_id: int,
    batch_rows: int = 64,
) -> list[list[tuple[list[int], bool]]]:
    """Sample ``n`` continuations of each prompt (token ids). Returns, per prompt, per sample,
    ``(generated ids up to and excluding the stop token, stopped)``; greedy returns one continuation per
    prompt, repeated ``n`` times."""
    n_eff = n if temperature > 0 else 1
    results: list[list[tuple[list[int], bool]]] = [[] for _ in prompts]
    if max_new_tokens <= 0 or not prompts:
        return [[([], False)] * n for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    per_batch = max(1, batch_rows // n_eff)
    for start in range(0, len(order), per_batch):
        members = order[start : start + per_batch]
        gen = _decode_batch(
            model,
            [prompts[i] for i in members],
            members,
            n_eff,
            temperature,
            top_p,
            max_new_tokens,
            seed,
            stop_ids,
            pad_id,
        )
        for i, rows in zip(members, gen):
            results[i] = rows if n_eff == n else rows * n
    return results


def _decode_batch(
    model: Any,
    prompts: list[list[int]],
    positions: list[int],
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    stop_ids: list[int],
    pad_id: int,
) -> list[list[tuple[list[int], bool]]]:
    from evarl.models.loading import device_of

    device = device_of(model)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        if p:
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = mask.cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)  # as generate(): padded positions are never attended to
    cache = _make_cache(model, max_new_tokens)
    cache_kw = _cache_kwarg(model)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    logits = out.logits[:, -1, :].float()
    croppable = _croppable(cache)
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
    next_pos = pos[:, -1].repeat_interleave(n) + 1
    # row r of the batch is sample j = r % n of prompt positions[r // n]
    alive = torch.arange(len(prompts) * n)
    if temperature > 0:
        uni = torch.stack(
            [sequence_uniforms(seed, positions[r // n], r % n, max_new_tokens) for r in range(len(alive))]
        ).to(device)
    else:
        uni = torch.zeros((len(alive), max_new_tokens), dtype=torch.float64, device=device)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(len(alive))]
    stopped = [False] * len(alive)
    alive_dev = alive.to(device)
    for step in range(max_new_tokens):
        nxt = sample_next(logits, uni[alive_dev, step], temperature, top_p)
        is_stop = torch.isin(nxt, stops) if stops.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        nxt_l, stop_l = nxt.tolist(), is_stop.tolist()
        for r, t, s in zip(alive.tolist(), nxt_l, stop_l):
            if s:
                stopped[r] = True
            else:
                tokens[r].append(t)
        if step + 1 == max_new_tokens:
            break
        if any(stop_l):
            keep = (~is_stop).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            alive, alive_dev = alive[keep.cpu()], alive_dev[keep]
            cache.batch_select_indices(keep)
            _set_reserve(cache, max_new_tokens - step)
            mask, nxt, next_pos = mask[keep], nxt[keep], next_pos[keep]
            # padding columns that no remaining row attends to: cut them from the cache (left side)
            lead = int((mask.sum(0) == 0).long().cumprod(0).sum()) if croppable else 0
            if lead:
                mask = mask[:, lead:]
                _crop_left(cache, lead)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(
            input_ids=nxt.unsqueeze(-1),
            attention_mask=mask,
            position_ids=next_pos.unsqueeze(-1),
            use_cache=True,
            **{cache_kw: cache},
        )
        logits = out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    return [[(tokens[b * n + j], stopped[b * n + j]) for j in range(n)] for b in range(len(prompts))]


def _cache_kwarg(model: Any) -> str:
    """transformers 5.x names the cache argument ``cache`` (``past_key_values`` is deprecated)."""
    try:
        params = inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _make_cache(model: Any, reserve: int) -> Any:
    """A DynamicCache whose full-attention layers write into preallocated buffers (no concatenation per step)."""
    cache = DynamicCache(config=getattr(model, "config", None))
    if cache.layers:
        cache.layers = [
            _BufferedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers
        ]
    else:
        cache.layer_class_to_replicate = lambda: _BufferedLayer(reserve)
    return cache


def _set_reserve(cache: Any, reserve: int) -> None:
    for layer in getattr(cache, "layers", []):
        if isinstance(layer, _BufferedLayer):
            layer.reserve = reserve


class _BufferedLayer(DynamicLayer):
    """A DynamicLayer that appends into a buffer with room for ``reserve`` more positions: transformers'
    DynamicLayer concatenates the whole cache at every step, a copy that costs as much as the attention on a
    CPU. ``keys``/``values`` are views of the filled part; batch operations fall back to DynamicLayer's
    (a fresh, contiguous tensor) and the next update moves them into a new buffer."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self._kbuf: Any = None
        self._vbuf: Any = None

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, t = self.get_seq_length(), key_states.shape[-2]
        buf = self._kbuf
        if (
            buf is None
            or buf.shape[0] != key_states.shape[0]
            or n + t > buf.shape[-2]
            or self.keys.data_ptr() != buf.data_ptr()
        ):
            b, h, _, d = key_states.shape
            cap = n + t + max(0, self.reserve)
            self._kbuf = key_states.new_empty((b, h, cap, d))
            self._vbuf = value_states.new_empty((b, value_states.shape[1], cap, value_states.shape[-1]))
            if n:
                self._kbuf[:, :, :n] = self.keys
                self._vbuf[:, :, :n] = self.values
        self._kbuf[:, :, n : n + t] = key_states
        self._vbuf[:, :, n : n + t] = value_states
        self.keys = self._kbuf[:, :, : n + t]
        self.values = self._vbuf[:, :, : n + t]
        return self.keys, self.values

    def crop_left(self, k: int) -> None:
        if self._kbuf is not None and self.keys.data_ptr() == self._kbuf.data_ptr():
            self._kbuf, self._vbuf = self._kbuf[:, :, k:], self._vbuf[:, :, k:]
        self.keys, self.values = self.keys[:, :, k:], self.values[:, :, k:]


def _croppable(cache: Any) -> bool:
    """Only plain full-attention layers hold every past position and can lose their leading columns."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer) is DynamicLayer or isinstance(layer, _BufferedLayer) for layer in layers
    )


def _crop_left(cache: Any, k: int) -> None:
    for layer in cache.layers:
        if isinstance(layer, _BufferedLayer):
            layer.crop_left(k)
        elif layer.keys is not None and layer.keys.dim() == 4:
            layer.keys = layer.keys[:, :, k:, :]
            layer.values = layer.values[:, :, k:, :]
