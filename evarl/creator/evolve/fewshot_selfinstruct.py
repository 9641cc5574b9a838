"""Few-shot self-instruct prompt creation of the self-rewarding pipeline, as its own evolve method.

Paper: "Exploring Self-Learning and Teacher-Guided Paradigms in LM Alignment" (the self-reward / teacher-reward /
teacher-demonstration study on Phi-2), §3.1.2 steps 1-2, Figures 2 and 3; the few-shot generation follows
Self-Instruct (Wang et al., 2022, arXiv:2212.10560, §2.1 and §2.4) and Self-Rewarding LMs (Yuan et al., 2024).

* **Creation (Figure 2).** The creator model receives the paper's instruction ("Come up with a series of tasks
  and questions ...", `evarl/prompts/evolve/fewshot_selfinstruct.txt`) followed by a numbered list of
  :data:`SHOTS` seed tasks, "Task 1: ..." to "Task k: ...", and an open "Task k+1:" to continue. The examples of
  child slot (parent, k) are the parent itself plus up to ``SHOTS - 1`` other prompts of the sampled set, drawn
  with a seeded RNG keyed by (seed, round, parent id, k), so each child is reproducible and independent of the
  order of the parents. The reply's first line is the new task ("Task 4:" labels and list markers removed); a
  reply cut at max_new_tokens after that line still gives a whole task (only a task cut mid-line is truncated).
  Unlike `selfinstruct` (distilabel's one-shot template that writes a query "applicable to the provided
  context"), the new task is a fresh instruction, not a variant of its parent: the child carries no verifiable
  constraints of its parent. The parent is still recorded as the child's `parent_id` for lineage.
* **Response prompt (Figure 3).** "for small model generating", the paper wraps each new question in "Provide a
  direct response to the following question in 256 characters or fewer ... Stick to the requested format:
  {prompt}." (`evarl/prompts/solver/fewshot_response.txt`). The child's user turn is that wrapped text, so the
  solver's N responses and the judge both see it; the bare question is kept in the child's `task` (what the next
  round's few-shot list shows) and in ``meta["question"]``.
* **Filters (Self-Instruct §2.4).** Two filters registered here, usable after the shared ones in
  `creator.filters`: ``rouge`` drops a task whose ROUGE-L F-measure (word LCS) with a parent or an earlier kept
  child is >= :data:`ROUGE_MAX` (0.7); ``selfinstruct`` drops tasks with fewer than 3 or more than 150 words,
  that mention what a text model cannot do (image, picture, graph, file, map, draw, plot, go to, video, audio,
  music, flowchart, diagram), or that start with punctuation or a non-ASCII character. Each dropped child is
  counted under the filter's name.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from functools import cache
from typing import Any

from evarl.creator.evolve.base import EvolveContext, SlotEvolver
from evarl.creator.evolve.common import (
    PROMPTS_DIR,
    first_line,
    generate_one,
    make_child,
    parse_rewrite,
    source_text,
)
from evarl.dist import stable_int
from evarl.generation.base import SamplingParams
from evarl.io import load_template
from evarl.registry import EVOLVERS, FILTERS
from evarl.types import Prompt

NAME = "fewshot_selfinstruct"
SHOTS = 4  # seed tasks shown per creation call (Self-Instruct shows 8; a 135M creator needs a short context)
ROUGE_MAX = (
    0.7  # Self-Instruct: a new task is kept only when its ROUGE-L with every existing one is below 0.7
)
MIN_WORDS, MAX_WORDS = 3, 150
BLOCKED_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
    "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip
_TASK_LABEL = re.compile(r"^\s*\**\s*(?:task|question|instruction)\s*\d*\s*\**\s*[:.)-]\s*\**\s*", re.I)
_BLOCKED = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in BLOCKED_WORDS) + r")\b", re.IGNORECASE)


@cache
def response_template() -> str:
    """Figure 3's response prompt (evarl/prompts/solver/fewshot_response.txt)."""
    p = PROMPTS_DIR / "solver" / "fewshot_response.txt"
    if not p.exists():
        raise FileNotFoundError(f"{p}: response prompt file missing")
    return p.read_text().strip()


def wrap_question(question: str) -> str:
    """The user turn for a new question: Figure 3 filled in (no doubled final punctuation)."""
    q = question.strip()
    text = response_template().replace("{prompt}", q)
    if q and q[-1] in ".?!" and text.endswith(q + "."):
        text = text[:-1]
    return text


def question_of(p: Prompt) -> str:
    """The bare task text of a prompt (a child's question, a default-task prompt's task, else its text)."""
    return str(p.meta.get("question") or source_text(p)).strip()


def creation_prompt(examples: list[str]) -> str:
    """Figure 2 followed by "Task 1: ..." .. "Task k: ..." and an open "Task k+1:"."""
    lines = [f"Task {i}: {' '.join(e.split())}" for i, e in enumerate(examples, 1)]
    lines.append(f"Task {len(examples) + 1}:")
    return load_template(NAME, "evolve").replace("{prompt}", "\n".join(lines))


def parse_task(raw: str) -> str:
    """The new task in a creator reply: its first line that is not an introduction ending in ":", without
    "Task 5:" labels, list markers or quotes."""
    text = parse_rewrite(raw)
    for line in text.splitlines():
        line = _TASK_LABEL.sub("", first_line(line)).strip()
        if line and not line.endswith(":"):  # "Here are some new tasks:" introduces the task, it is not one
            return parse_rewrite(line)
    return ""


def task_line_ended(raw: str, task: str) -> bool:
    """Whether the line the task was taken from ends inside `raw` (a newline follows it), so a reply cut at
    max_new_tokens still holds the whole task."""
    i = raw.find(task) if task else -1
    return i >= 0 and "\n" in raw[i + len(task) :]


def pick_examples(parent: Prompt, pool: list[Prompt], k: int, ctx: EvolveContext) -> list[str]:
    """The parent's question and up to SHOTS - 1 others from `pool`, seeded by (seed, round, parent, k)."""
    others = sorted({question_of(p) for p in pool if p.id != parent.id} - {question_of(parent)})
    rng = random.Random(stable_int(ctx.seed, ctx.round, NAME, parent.id, k))
    shots = rng.sample(others, min(SHOTS - 1, len(others)))
    shots.insert(rng.randrange(len(shots) + 1), question_of(parent))
    return shots


@EVOLVERS.register(NAME)
class FewShotSelfInstruct(SlotEvolver):
    """Few-shot self-instruct (self-rewarding pipeline, Figures 2-3): a new task from k seed tasks, wrapped in the
    direct-response prompt."""

    name = NAME

    def evolve_slots(self, slots: list[tuple[Prompt, int]], ctx: EvolveContext) -> list[Prompt]:
        pool = list({p.id: p for p, _ in slots}.values())
        convs = [
            [{"role": "user", "content": creation_prompt(pick_examples(p, pool, k, ctx))}] for p, k in slots
        ]
        params = SamplingParams(
            n=1,
            temperature=ctx.temperature,
            top_p=1.0,
            max_new_tokens=ctx.max_new_tokens,
            seed=stable_int(ctx.seed, ctx.round, self.name),
        )
        out: list[Prompt] = []
        for (root, k), g in zip(slots, generate_one(ctx.generator, convs, params)):
            question = parse_task(g.text)
            finish = g.finish_reason
            if finish == "length" and task_line_ended(g.text, question):
                finish = "stop"  # the reply ran on past the task's own line: the task itself is whole
            child = make_child(
                root,
                question,
                method=self.name,
                ctx_round=ctx.round,
                k=k,
                step=1,
                prev=root,
                constraints=[],  # a new task: none of the parent's verifiable constraints
                finish_reason=finish,
                raw=g.text,
                error=None if question else "no usable task in creator output",
                extra={"question": question, "reply_finish_reason": g.finish_reason} if question else None,
            )
            if question:
                child = replace(child, messages=_with_user_turn(child.messages, wrap_question(question)))
            out.append(child)
        return out


def _with_user_turn(messages: list[dict[str, str]], content: str) -> list[dict[str, str]]:
    msgs = [dict(m) for m in messages]
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "user":
            msgs[i] = {"role": "user", "content": content}
            return msgs
    return [*msgs, {"role": "user", "content": content}]


# ------------------------------------------------------------------ Self-Instruct filters


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure of two word lists (longest common subsequence; beta = 1)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


@FILTERS.register("rouge")
def rouge(children: list[Prompt], ctx: Any) -> list[bool]:
    """Drops tasks with ROUGE-L >= 0.7 to a parent or an earlier kept child (Self-Instruct's novelty filter)."""
    seen = [words(question_of(p)) for p in ctx.parents]
    keep = []
    for c in children:
        w = words(question_of(c))
        ok = all(rouge_l(w, s) < ROUGE_MAX for s in seen)
        keep.append(ok)
        if ok:
            seen.append(w)
    return keep


def selfinstruct_problem(question: str) -> str | None:
    """Why Self-Instruct's heuristics reject a task (None = kept)."""
    n = len(question.split())
    if n < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    if n > MAX_WORDS:
        return f"more than {MAX_WORDS} words"
    m = _BLOCKED.search(question)
    if m:
        return f"asks for what a text model cannot do ({m.group(0).lower()!r})"
    first = question.lstrip()[:1]
    if not first.isascii():
        return "starts with a non-ASCII character"
    if not first.isalnum():
        return "starts with punctuation"
    return None


@FILTERS.register("selfinstruct")
def selfinstruct(children: list[Prompt], ctx: Any) -> list[bool]:
    """Drops tasks Self-Instruct's heuristics reject: < 3 or > 150 words, image/file/... words, a leading
    punctuation mark or non-ASCII character."""
    return [selfinstruct_problem(question_of(c)) is None for c in children]
