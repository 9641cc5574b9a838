"""The one truncation policy for prompts that are longer than their token budget.

Every consumer of prompt token ids goes through :func:`encode_prompt` (:func:`fit_prompt`): the generation
backends (``hf`` / ``hf-static`` prompt ids, ``vllm`` ``prompt_token_ids``) and training tokenisation
(:mod:`evarl.solver.logprobs`, SFT and the online loop). So a prompt the sampler saw is the prompt the trainer
scores, token for token, at the same budget. (``openai`` sends messages; the server applies its own limits.)

Policy: cut from the left of the *conversation*, never from the structure the model needs to answer.

1. A prompt that fits is the chat template rendered once (:func:`evarl.chat.render_chat`, generation prompt
   included) and tokenised without added special tokens: nothing changes.
2. Otherwise the oldest turns after the leading system message(s) are dropped, one user/assistant exchange at a
   time (the conversation still starts with a user turn), until it fits or only the last message is left.
3. Then the last message's *content* keeps its last tokens: the end of the instruction, where the verifiable
   constraints are written, survives; its beginning goes. The system prompt is kept whole, unless it is so long
   that it would leave the last message less than half of the room: then its beginning is cut first, down to
   the other half.
4. Then (a template whose own tokens leave no room) the system message(s) content is cut the same way.
5. The template is re-rendered after each cut, so BOS, the system prompt the template inserts, role tokens and
   the assistant generation header are always there. Only when the template's own tokens exceed the budget are
   the last ``budget`` ids kept (the generation header still survives).

This replaces two inconsistent behaviours: a right cut at generation (which dropped the constraints and the
assistant header) and a left cut of raw ids in training (which dropped BOS and the system prompt).

Counting: every cut prompt is counted in a process-wide counter (:func:`take_truncated`); a run stage reads it
when it finishes, logs one warning with the number and records it as ``prompts_truncated`` in the stage's
manifest counts (:mod:`evarl.runs`).
"""

from __future__ import annotations

import threading
from typing import Any

from evarl.chat import render_chat

_count_lock = threading.Lock()
_count = 0


def note_truncated(n: int = 1) -> None:
    """Count ``n`` prompts that were cut (thread-safe)."""
    global _count
    with _count_lock:
        _count += n


def take_truncated() -> int:
    """The number of prompts cut since the last call, and reset the counter."""
    global _count
    with _count_lock:
        n, _count = _count, 0
    return n


def _ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


def _cut_content(tokenizer: Any, msgs: list[dict[str, str]], k: int, budget: int) -> list[int] | None:
    """Keep the last tokens of ``msgs[k]["content"]`` so the rendered prompt fits; the ids, or None (with the
    content emptied in ``msgs``) when even an empty content does not fit."""
    content = str(msgs[k].get("content") or "")
    cids = list(tokenizer(content, add_special_tokens=False)["input_ids"])
    msgs[k] = {**msgs[k], "content": ""}
    overhead = len(_ids(tokenizer, msgs))
    keep = min(len(cids), budget - overhead)
    while keep > 0:
        text = tokenizer.decode(cids[-keep:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        msgs[k] = {**msgs[k], "content": text}
        ids = _ids(tokenizer, msgs)
        if len(ids) <= budget:
            return ids
        keep -= max(1, len(ids) - budget)  # re-tokenising the decoded tail can merge differently
    msgs[k] = {**msgs[k], "content": ""}
    return None


def _tail(tokenizer: Any, text: str, n: int) -> str:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if n <= 0:
        return ""
    if n >= len(ids):
        return text
    return tokenizer.decode(ids[-n:], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _share_with_system(tokenizer: Any, msgs: list[dict[str, str]], last: int, budget: int) -> None:
    """Cut the first system message's content from the left when keeping it whole would leave the last message
    less than half of the room (or less than it needs): the instruction's end matters more than a long
    system prompt's beginning."""
    sys_text, last_text = str(msgs[0].get("content") or ""), str(msgs[last].get("content") or "")
    empty = [{**m, "content": ""} if i in (0, last) else m for i, m in enumerate(msgs)]
    room = budget - len(_ids(tokenizer, empty))
    n_sys = len(tokenizer(sys_text, add_special_tokens=False)["input_ids"])
    want = min(len(tokenizer(last_text, add_special_tokens=False)["input_ids"]), max(room, 0) // 2)
    if n_sys + want > room:
        msgs[0] = {**msgs[0], "content": _tail(tokenizer, sys_text, room - want)}


def fit_prompt(tokenizer: Any, messages: list[dict[str, str]], budget: int) -> tuple[list[int], bool]:
    """(prompt ids within ``budget``, whether the prompt was cut), by the module's policy. Counts a cut."""
    if budget < 1:
        raise ValueError(f"prompt budget must be >= 1 token, got {budget}")
    ids = _ids(tokenizer, messages)
    if len(ids) <= budget:
        return ids, False
    note_truncated()
    msgs = [dict(m) for m in messages]
    head = 0
    while head < len(msgs) and msgs[head].get("role") == "system":
        head += 1
    while len(msgs) - head > 1 and len(ids) > budget:  # 2. oldest exchanges first
        del msgs[head]
        while len(msgs) - head > 1 and msgs[head].get("role") != "user":
            del msgs[head]
        ids = _ids(tokenizer, msgs)
    if len(ids) <= budget:
        return ids, True
    last = len(msgs) - 1
    if 0 < head <= last:  # a system prompt so long it would leave the instruction less than half the room
        _share_with_system(tokenizer, msgs, last, budget)
    for k in [last, *range(head)]:  # 3. the last message's content, 4. the system content
        cut = _cut_content(tokenizer, msgs, k, budget)
        if cut is not None:
            return cut, True
    ids = _ids(tokenizer, msgs)  # 5. the template alone is longer than the budget
    return ids[-budget:], True


def encode_prompt(tokenizer: Any, messages: list[dict[str, str]], max_prompt_length: int) -> list[int]:
    """Prompt ids with the chat template and generation prompt, within ``max_prompt_length`` tokens by the
    module's policy: the ids a sampler is given and the trainer puts in front of a response."""
    return fit_prompt(tokenizer, messages, max_prompt_length)[0]


__all__ = ["encode_prompt", "fit_prompt", "note_truncated", "take_truncated"]
