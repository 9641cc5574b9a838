"""Preference pairs from scored responses (the solver's "pairs" stage).

Rules (registered in :data:`evarl.registry.PAIR_RULES`):

* ``best_worst`` (default): y+ = the highest-reward response, y- = the lowest (seed 001 §3.3.1, "the
  responses with the maximal and the minimal reward"; seed 003 §3.3, best-of-n vs worst-of-n).
* ``best_random``: y+ = the best, y- uniformly at random among the responses scored strictly lower
  (RLHFlow's ``max_random``).

Shared filtering, counted per reason in the second return value of :func:`build_pairs`:

* ``missing_prompt``  completions whose prompt id is not in ``prompts``;
* ``too_few_valid``   fewer than two responses with a usable reward (failed / ``None`` rewards are dropped);
* ``tie``             the best and the rejected response have the same reward (no preference signal);
* ``identical``       y+ and y- are the same text after whitespace stripping (seed 003: "we also drop the pair
  where pi^1 and pi^2 give the same response");
* ``low_margin``      reward margin below ``min_margin``.

Ties for the best (or worst) reward are broken by the lowest response index, so pairs do not depend on the
order rows arrive in. ``best_random`` draws from an RNG seeded by ``(seed, prompt_id)``, so one prompt's pair
does not change when other prompts are added or removed.

SPPO: when a :class:`Scored` row carries ``components["win_prob"]`` (P(y > pi_t) from a pairwise preference
model), it is copied into ``Pair.meta["chosen_win_prob"]`` / ``["rejected_win_prob"]`` for the ``sppo`` loss.

On disk (``round-00t/pairs.jsonl``) each pair is a row of TRL's conversational preference format (see
:class:`evarl.types.Pair`): ``trl.DPOTrainer`` trains on the file as is, and ``evarl export`` writes it as
Parquet or a ``datasets`` folder.

Also :func:`teacher_demo_pairs` (seed 002 §3.3, teacher-demonstration alignment): the teacher's response is
chosen, the student's own response rejected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from evarl.registry import PAIR_RULES
from evarl.types import Completion, Pair, Prompt, Scored

SKIP_REASONS = ("missing_prompt", "too_few_valid", "tie", "identical", "low_margin")


@dataclass(frozen=True)
class Candidate:
    index: int
    text: str
    reward: float
    win_prob: float | None = None


PairRule = Callable[[list[Candidate], random.Random], tuple[Candidate, Candidate] | None]


def _best(cands: list[Candidate]) -> Candidate:
    return min(cands, key=lambda c: (-c.reward, c.index))


@PAIR_RULES.register("best_worst")
def best_worst(cands: list[Candidate], rng: random.Random) -> tuple[Candidate, Candidate] | None:
    """Highest-reward response vs lowest-reward response (ties broken by lowest index)."""
    worst = min(cands, key=lambda c: (c.reward, c.index))
    return _best(cands), worst


@PAIR_RULES.register("best_random")
def best_random(cands: list[Candidate], rng: random.Random) -> tuple[Candidate, Candidate] | None:
    """Highest-reward response vs a uniformly random response with a strictly lower reward."""
    best = _best(cands)
    lower = sorted((c for c in cands if c.reward < best.reward), key=lambda c: c.index)
    if not lower:
        return None
    return best, lower[rng.randrange(len(lower))]


def build_pairs(
    rule: str,
    prompts: dict[str, Prompt],
    completions: list[Completion],
    scores: list[Scored],
    min_margin: float,
    seed: int,
) -> tuple[list[Pair], dict[str, int]]:
    """One (x, y+, y-) pair per prompt with rule ``rule``; returns (pairs, skipped prompts by reason).

    ``scores`` are joined to ``completions`` on ``(prompt_id, index)``; a completion without a score counts as
    failed. Pairs come out in order of first appearance of their prompt in ``completions``.
    """
    pick: PairRule = PAIR_RULES.get(rule)
    by_key = {(s.prompt_id, s.index): s for s in scores}
    grouped: dict[str, list[Completion]] = {}
    for c in completions:
        grouped.setdefault(c.prompt_id, []).append(c)

    skipped = dict.fromkeys(SKIP_REASONS, 0)
    pairs: list[Pair] = []
    for pid, comps in grouped.items():
        if pid not in prompts:
            skipped["missing_prompt"] += 1
            continue
        cands: list[Candidate] = []
        for c in comps:
            s = by_key.get((pid, c.index))
            if s is None or s.failed or s.reward is None or s.reward != s.reward:  # NaN check
                continue
            wp = s.components.get("win_prob") if s.components else None
            cands.append(Candidate(c.index, c.text, float(s.reward), None if wp is None else float(wp)))
        if len(cands) < 2:
            skipped["too_few_valid"] += 1
            continue
        chosen_rejected = pick(cands, random.Random(f"{seed}:{pid}"))
        if chosen_rejected is None:
            skipped["tie"] += 1
            continue
        ch, rj = chosen_rejected
        margin = ch.reward - rj.reward
        if margin <= 0:
            skipped["tie"] += 1
            continue
        if ch.text.strip() == rj.text.strip():
            skipped["identical"] += 1
            continue
        if margin < min_margin:
            skipped["low_margin"] += 1
            continue
        meta: dict = {
            "rule": rule,
            "chosen_index": ch.index,
            "rejected_index": rj.index,
            "candidates": len(cands),
        }
        if ch.win_prob is not None and rj.win_prob is not None:
            meta["chosen_win_prob"] = ch.win_prob
            meta["rejected_win_prob"] = rj.win_prob
        pairs.append(
            Pair(
                prompt_id=pid,
                prompt=prompts[pid].messages,
                chosen=ch.text,
                rejected=rj.text,
                chosen_reward=ch.reward,
                rejected_reward=rj.reward,
                meta=meta,
            )
        )
    return pairs, skipped


def teacher_demo_pairs(
    prompts: dict[str, Prompt], teacher_texts: dict[str, str], student_completions: list[Completion]
) -> list[Pair]:
    """Teacher-demonstration pairs (seed 002 §3.3): teacher response chosen, student response rejected.

    For each prompt with a non-empty teacher text, the student's completion with the lowest index is the
    rejected response. Prompts without a teacher text or student completion, or where the two texts are
    identical, give no pair. Rewards stay ``None`` (the pair is not ordered by a reward).
    """
    first: dict[str, Completion] = {}
    for c in student_completions:
        if c.prompt_id not in first or c.index < first[c.prompt_id].index:
            first[c.prompt_id] = c
    pairs: list[Pair] = []
    for pid, student in first.items():
        teacher = (teacher_texts.get(pid) or "").strip()
        if pid not in prompts or not teacher or not student.text.strip() or teacher == student.text.strip():
            continue
        pairs.append(
            Pair(
                prompt_id=pid,
                prompt=prompts[pid].messages,
                chosen=teacher,
                rejected=student.text,
                meta={"rule": "teacher_demo", "rejected_index": student.index},
            )
        )
    return pairs
