"""Shared pieces of the LLM evolvers: meta-prompt files, output parsing, child construction, seeding.

Meta-prompts live in `evarl/prompts/evolve/*.txt` (read with `evarl.io.load_template(name, "evolve")`) with
`{prompt}` and `{method}` placeholders (filled by plain string replacement, so braces in a prompt are safe). The creator's output is parsed as distilabel does (the text
after the last `...Prompt#:` header) plus the cleaning a small model needs: leading labels ("Rewritten prompt:",
"Sure, here is ..."), wrapping quotes, bold markers and code fences are removed.

Default-task prompts (those with a `task`) evolve their task text only; the parent's constraints are appended
again with `build_prompt_text`, so the verifier still checks exactly the constraints the text states.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache

from evarl.generation.base import GenOutput, SamplingParams
from evarl.io import PROMPTS_DIR
from evarl.types import Constraint, Prompt

MAX_ID_CHARS = 96


@cache
def load_mutations(name: str) -> dict[str, str]:
    """`NAME: method text` lines of prompts/evolve/<name>.txt ('#' lines are comments)."""
    out: dict[str, str] = {}
    for i, line in enumerate((PROMPTS_DIR / "evolve" / f"{name}.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, text = line.partition(":")
        if not sep or not key.strip() or not text.strip():
            raise ValueError(f"prompts/evolve/{name}.txt:{i}: expected 'NAME: method text'")
        out[key.strip()] = text.strip()
    return out


def fill(template: str, prompt: str, method: str = "") -> str:
    return template.replace("{method}", method).replace("{prompt}", prompt)


_HEADER = re.compile(
    r"#\s*(?:the\s+)?(?:rewritten|created|new|given|evolved)\s+prompt\s*#\s*:?", re.IGNORECASE
)
_LABEL = re.compile(
    r"^\s*(?:\*\*|__)?\s*(?:(?:the|my|your|a|an|here(?:'s| is)(?: the| my| a| an)?)\s+)?"
    r"(?:rewritten|created|new|evolved|improved|revised|modified|final|updated)?\s*"
    r"(?:prompt|question|query|instruction|task|request)\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?",
    re.IGNORECASE,
)
# "Sure! Here is the rewritten prompt:\n..." - only when the line talks about the rewrite itself, so a prompt that
# starts with "Here is a list of numbers:" keeps its first line.
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)|below is)\b"
    r"[^\n]{0,120}?\b(?:prompt|version|rewrite|rewritten|question|query|instruction)s?\b[^\n]{0,40}?:\s*",
    re.IGNORECASE,
)
# trailing commentary a chat model adds after the rewrite ("This rewritten prompt adds ...", "Note: ...")
_COMMENTARY = re.compile(
    r"^\s*(?:\*\*)?(?:note|explanation|changes(?: made)?|rationale)\b\s*(?:\*\*)?\s*:"
    r"|^\s*(?:this|the|in this|my)\s+(?:rewritten|revised|new|created|evolved|modified)\s+(?:prompt|version|question)",
    re.IGNORECASE,
)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("`", "`"), ("**", "**")]


def parse_rewrite(raw: str) -> str:
    """The usable prompt text in a creator output ('' if nothing usable is left)."""
    text = raw.replace("\r\n", "\n").strip()
    # distilabel keeps what follows the last "...Prompt#:" header; a model that echoes the template
    # produces several, and the rewrite is after the last one.
    heads = list(_HEADER.finditer(text))
    if heads:
        text = text[heads[-1].end() :].strip()
        text = re.sub(r"^(?:is|are|would be|reads|becomes)?\s*:\s*", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^```[a-zA-Z]*\n?|\n?```$", "", text).strip()
    paras = re.split(r"\n\s*\n", text)
    while len(paras) > 1 and _COMMENTARY.search(paras[-1]):
        paras.pop()
    text = "\n\n".join(paras).strip()
    for _ in range(3):  # labels and preambles can be stacked: "Sure! Here it is:\nRewritten prompt: ..."
        before = text
        text = _PREAMBLE.sub("", text, count=1).strip()
        text = _LABEL.sub("", text, count=1).strip()
        if text == before:
            break
    for lo, hi in _QUOTES:
        if len(text) > len(lo) + len(hi) and text.startswith(lo) and text.endswith(hi):
            inner = text[len(lo) : -len(hi)]
            if lo not in inner:  # only a single wrapping pair
                text = inner.strip()
    return text


def first_line(text: str) -> str:
    """The first non-empty line, without list markers (self-instruct emits one query per line)."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip()
        if line:
            return line
    return ""


def source_text(p: Prompt) -> str:
    """What the creator rewrites: the task text for default-task prompts, else the last user turn."""
    return p.task if p.task else p.text


def child_id(parent: Prompt, round_: int, method: str, k: int, step: int) -> str:
    cid = f"{parent.id}-r{round_}-{method}-{k}.{step}"
    if len(cid) > MAX_ID_CHARS:  # ids grow with every round; keep them bounded but deterministic
        cid = f"{parent.id[:40]}~{hashlib.sha1(cid.encode()).hexdigest()[:16]}"
    return cid


def with_text(parent: Prompt, text: str, constraints: list[Constraint] | None = None) -> tuple[list, str]:
    """(messages, task) for a child whose evolved source text is `text`."""
    if parent.task or constraints is not None:
        from evarl.tasks.constraints import build_prompt_text

        cons = parent.constraints if constraints is None else constraints
        content = build_prompt_text(text, cons) if text else ""
        task = text
    else:
        content, task = text, ""
    messages = [dict(m) for m in parent.messages]
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            messages[i] = {"role": "user", "content": content}
            break
    else:
        messages.append({"role": "user", "content": content})
    return messages, task


def make_child(
    root: Prompt,
    text: str,
    *,
    method: str,
    mutation: str | None = None,
    ctx_round: int,
    k: int,
    step: int,
    prev: Prompt,
    constraints: list[Constraint] | None = None,
    finish_reason: str = "stop",
    raw: str | None = None,
    error: str | None = None,
    extra: dict | None = None,
) -> Prompt:
    """A child of `root` (the sampled parent) after `step` chained evolutions; `prev` is the step before.

    Lineage: parent_id is always the sampled parent (a prompt of the previous set), depth = root.depth + step;
    meta["prev_id"] is the chain step it was evolved from and meta["chain_methods"] the mutations applied.
    """
    messages, task = with_text(prev, text, constraints)
    cons = list(constraints if constraints is not None else prev.constraints)
    meta: dict = {
        "finish_reason": finish_reason,
        "chain_step": step,
        "chain_methods": [
            *(prev.meta.get("chain_methods", []) if prev.id != root.id else []),
            mutation or method,
        ],
        "prev_id": prev.id,
    }
    if raw is not None:
        meta["raw"] = raw
    if error:
        meta["evolve_error"] = error
    if extra:
        meta.update(extra)
    return Prompt(
        id=child_id(root, ctx_round, method, k, step),
        messages=messages,
        task=task,
        constraints=[Constraint(c.id, dict(c.kwargs)) for c in cons],
        category=root.category,
        parent_id=root.id,
        method=method,
        round=ctx_round,
        depth=root.depth + step,
        meta=meta,
    )


def generate_one(
    generator, conversations: list[list[dict[str, str]]], params: SamplingParams
) -> list[GenOutput]:
    """One sample per conversation, checked for shape (a backend returning the wrong count is a bug)."""
    if not conversations:
        return []
    outs = generator.generate(conversations, params)
    if len(outs) != len(conversations) or any(len(o) < 1 for o in outs):
        raise RuntimeError(
            f"generator {getattr(generator, 'name', generator)!r} returned {len(outs)} results "
            f"for {len(conversations)} conversations"
        )
    return [o[0] for o in outs]
