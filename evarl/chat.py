"""Chat rendering, the one place a tokenizer's chat template is applied to a conversation.

Used by generation (the prompt text a backend samples from), the solver (the same prompt text, tokenised for
training, and the end-of-turn token appended to every response) and the reward models and judges that read a
conversation in their own template. Bottom layer: it imports nothing from evarl, and the tokenizer is any
object with the `transformers` tokenizer interface.
"""

from __future__ import annotations

import weakref
from typing import Any


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, conversation: list[dict[str, str]]) -> str:
    """The prompt text a model answers: `conversation` in the chat template with the generation prompt
    (the assistant header) appended; a plain LM without a template gets the turns joined by blank lines."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    # plain LMs without a template: concatenate turns
    return "\n\n".join(m["content"] for m in conversation) + "\n\n"


def render_template(tokenizer: Any, conversation: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """`conversation` in the tokenizer's own chat template (the caller checks `has_chat_template` and chooses
    its own plain-text form for a tokenizer without one)."""
    if add_generation_prompt:
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(conversation, tokenize=False)


# A reply no chat template rewrites (no surrounding whitespace, nothing a template would strip or escape).
_REPLY_MARKER = "evarlreplymarker7q"
# tokenizer -> (chat_template, eos_token_id, end-of-turn id); weak keys: a tokenizer's entry dies with it, and
# the template and EOS are part of the value so that editing either recomputes it
_EOT_CACHE: weakref.WeakKeyDictionary[Any, tuple[Any, Any, int | None]] = weakref.WeakKeyDictionary()


def _is_special(tokenizer: Any, token_id: int) -> bool:
    if token_id in set(getattr(tokenizer, "all_special_ids", None) or ()):
        return True
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tok = added.get(token_id)
    return bool(getattr(tok, "special", False))


def _find_end_of_turn(tokenizer: Any) -> int | None:
    eos = tokenizer.eos_token_id
    if not has_chat_template(tokenizer):
        return eos
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _REPLY_MARKER}]
    try:
        text = tokenizer.apply_chat_template(conv, tokenize=False)
    except Exception:  # a template that rejects this conversation: keep the tokenizer's EOS
        return eos
    if not isinstance(text, str) or _REPLY_MARKER not in text:
        return eos
    after = text[text.rindex(_REPLY_MARKER) + len(_REPLY_MARKER) :]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    for t in ids:
        if _is_special(tokenizer, int(t)):
            return int(t)
        if tokenizer.decode([t]).strip():
            break  # plain text right after the reply: the template has no end-of-turn token of its own
    return eos


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token that ends an assistant turn in ``tokenizer``'s chat template, else its EOS id.

    Found by rendering a short user/assistant conversation and taking the first special token right after the
    reply (whitespace in between is skipped): ``<|im_end|>`` for ChatML (SmolLM2, where it is also the EOS),
    ``<end_of_turn>`` for Gemma, ``<|eot_id|>`` for Llama 3. Cached per tokenizer.
    """
    key = (getattr(tokenizer, "chat_template", None), tokenizer.eos_token_id)
    try:
        hit = _EOT_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable / hashable: compute every time
        return _find_end_of_turn(tokenizer)
    if hit is not None and hit[:2] == key:
        return hit[2]
    eot = _find_end_of_turn(tokenizer)
    _EOT_CACHE[tokenizer] = (*key, eot)
    return eot
