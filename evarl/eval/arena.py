"""Arena-Hard-Auto style judging: 5-level verdicts in both orders and a Bradley-Terry score against a baseline.

Li, Chiang, Frick, Dunlap, Wu, Zhu, Gonzalez, Stoica (2024), "From crowdsourced data to high-quality benchmarks:
Arena-Hard and BenchBuilder pipeline", arXiv:2406.11939 — the benchmark the eva paper (Ye et al. 2024,
arXiv:2411.00062, Tables 1-5) reports. Protocol, as Arena-Hard-Auto runs it:

* every question is judged twice: game 1 with the baseline's answer as assistant A and the model's as B, game 2
  with the order swapped, so position bias cancels;
* the judge ends with a verdict label ``[[A>>B]]``, ``[[A>B]]``, ``[[A=B]]``, ``[[B>A]]`` or ``[[B>>A]]`` (its
  ``regex_pattern``); a reply without exactly one distinct label is asked to "continue your judgment and finish by
  outputting a final verdict label", up to ``number_of_judgment_attempts`` replies; a game that still has no
  label is a parse failure, counted and excluded (never a loss);
* a strong verdict (``>>``) counts as ``weight`` (3) battles, a weak one as one, a tie as one tie;
* the score is the Bradley-Terry win probability of the model against the baseline (ties half a win each), with a
  95% interval from bootstrapping questions.

The judge prompt: evarl's own template (``prompts/eval/arena_system.txt`` and ``arena_user.txt``) is the default
and is *not* the official Arena-Hard prompt; pass the official ``judge_config.yaml`` of Arena-Hard-Auto
(``--arena-judge-config``) and its ``system_prompt``, ``prompt_template``, ``regex_pattern``,
``number_of_judgment_attempts``, ``temperature`` and ``max_tokens`` are used as they are written there; the output
names which prompt graded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evarl.config import ConfigError
from evarl.errors import EndpointError
from evarl.eval.stats import bootstrap_ci
from evarl.generation.base import Generator, SamplingParams
from evarl.io import fill_template, load_template

LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
DEFAULT_PATTERN = r"\[\[([AB<>=]+)\]\]"
CONTINUE = "continue your judgment and finish by outputting a final verdict label"


@dataclass
class ArenaJudgeConfig:
    """What a judge needs: prompts, verdict pattern, attempts, sampling; ``source`` says whose prompt it is."""

    system_prompt: str
    prompt_template: str  # slots {question_1}, {answer_1} (assistant A), {answer_2} (assistant B)
    regex_pattern: str = DEFAULT_PATTERN
    attempts: int = 2
    temperature: float = 0.0
    max_tokens: int = 4096
    weight: int = 3
    source: str = "evarl default (a paraphrase; not the official Arena-Hard prompt)"

    @classmethod
    def default(cls) -> ArenaJudgeConfig:
        return cls(
            system_prompt=load_template("arena_system", "eval"),
            prompt_template=load_template("arena_user", "eval", ("question_1", "answer_1", "answer_2")),
            max_tokens=1024,
        )

    @classmethod
    def from_official(cls, path: str | Path) -> ArenaJudgeConfig:
        """Read Arena-Hard-Auto's ``judge_config.yaml`` (the user's copy) in its own format."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError([f"{p}: cannot read the Arena-Hard judge config ({e.strerror or e})"]) from e
        except yaml.YAMLError as e:
            raise ConfigError([f"{p}: not valid YAML ({e})"]) from e
        if not isinstance(data, dict):
            raise ConfigError([f"{p}: expected Arena-Hard-Auto's judge_config.yaml mapping"])
        errors = []
        for key in ("system_prompt", "prompt_template"):
            if key not in data:
                errors.append(f"{p}: {key}: missing (Arena-Hard-Auto's judge_config.yaml has it)")
        tpl = data.get("prompt_template")
        if isinstance(tpl, list):
            tpl = tpl[0] if tpl else None
        if "prompt_template" in data and not isinstance(tpl, str):
            errors.append(f"{p}: prompt_template: expected a string or a list of strings")
        elif isinstance(tpl, str):
            missing = [s for s in ("{question_1}", "{answer_1}", "{answer_2}") if s not in tpl]
            if missing:
                errors.append(f"{p}: prompt_template: missing slots {missing}")
        pattern = data.get("regex_pattern", DEFAULT_PATTERN)
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            errors.append(f"{p}: regex_pattern: not a regular expression ({e})")
        if errors:
            raise ConfigError(errors)
        return cls(
            system_prompt=str(data["system_prompt"]),
            prompt_template=tpl,
            regex_pattern=pattern,
            attempts=int(data.get("number_of_judgment_attempts", 2)),
            temperature=float(data.get("temperature", 0.0)),
            max_tokens=int(data.get("max_tokens", 4096)),
            source=f"official Arena-Hard-Auto judge config {p}",
        )


def parse_verdict(text: str, pattern: str = DEFAULT_PATTERN) -> str | None:
    """The one distinct verdict label in ``text`` (Arena-Hard keeps a reply only when all its labels agree)."""
    found = {m.strip("\n") for m in re.findall(pattern, text or "")}
    if len(found) != 1:
        return None
    label = found.pop()
    return label if label in LABELS else None


@dataclass
class ArenaGame:
    """One question judged in both orders: game 1 = (baseline A, model B), game 2 = (model A, baseline B)."""

    id: str
    verdicts: tuple[str | None, str | None]
    raw: tuple[str, str]
    len_model: int = 0
    len_baseline: int = 0
    battles: list[float] = field(default_factory=list)  # model's outcome per battle: 1 win, 0.5 tie, 0 loss

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdicts"] = list(self.verdicts)
        d["raw"] = list(self.raw)
        return d


def battles_from_verdicts(game1: str | None, game2: str | None, weight: int = 3) -> list[float]:
    """The model's outcomes from its two games: game 1 has the model as B, game 2 as A; strong verdicts count
    ``weight`` times; an unparsed game contributes nothing."""
    out: list[float] = []
    for label, model_is_a in ((game1, False), (game2, True)):
        if label is None:
            continue
        if label == "A=B":
            out.append(0.5)
            continue
        a_wins = label.startswith("A")
        model_wins = a_wins == model_is_a
        out += [1.0 if model_wins else 0.0] * (weight if ">>" in label else 1)
    return out


def judge_arena(
    judge: Generator,
    questions: Sequence[str],
    model_answers: Sequence[str],
    baseline_answers: Sequence[str],
    ids: Sequence[str] | None = None,
    config: ArenaJudgeConfig | None = None,
) -> list[ArenaGame]:
    """Both games of every question, batched; replies without a label get up to ``attempts`` turns in all."""
    cfg = config or ArenaJudgeConfig.default()
    n = len(questions)
    if not (len(model_answers) == len(baseline_answers) == n):
        raise ValueError(
            f"{n} questions, {len(model_answers)} model answers, {len(baseline_answers)} baseline"
        )
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    convs: list[list[dict[str, str]]] = []
    for q, m, b in zip(questions, model_answers, baseline_answers):
        for a1, a2 in ((b, m), (m, b)):  # game 1: baseline is A; game 2: the model is A
            user = fill_template(cfg.prompt_template, question_1=q, answer_1=a1, answer_2=a2)
            convs.append(
                [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": user}]
            )
    params = SamplingParams(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_tokens)
    replies = [""] * len(convs)
    labels: list[str | None] = [None] * len(convs)
    todo = list(range(len(convs)))
    errors = 0
    for attempt in range(max(1, cfg.attempts)):
        if not todo:
            break
        outs = judge.generate([convs[i] for i in todo], params)
        errors = sum(1 for o in outs if o and o[0].finish_reason == "error")
        if attempt == 0 and errors == len(todo):
            last = getattr(judge, "last_error", None) or "no reason given"
            raise EndpointError(f"arena judge: all {errors} requests failed; last error: {last}")
        nxt = []
        for i, o in zip(todo, outs):
            text = o[0].text if o else ""
            replies[i] = (replies[i] + "\n" + text).strip() if attempt else text
            labels[i] = parse_verdict(text, cfg.regex_pattern)
            if labels[i] is None:
                convs[i] = [
                    *convs[i],
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": CONTINUE},
                ]
                nxt.append(i)
        todo = nxt
    games = []
    for k in range(n):
        g1, g2 = labels[2 * k], labels[2 * k + 1]
        games.append(
            ArenaGame(
                id=ids[k],
                verdicts=(g1, g2),
                raw=(replies[2 * k], replies[2 * k + 1]),
                len_model=len(model_answers[k]),
                len_baseline=len(baseline_answers[k]),
                battles=battles_from_verdicts(g1, g2, cfg.weight),
            )
        )
    return games


def bt_win_probability(outcomes: np.ndarray) -> float:
    """Bradley-Terry maximum-likelihood P(model beats baseline) from battle outcomes (ties half a win).

    With two players the BT likelihood prod p^w (1-p)^l is maximised at p = w / (w + l), ties adding half to each
    side: the weighted win share. Arena-Hard's logistic fit over all models reduces to this for one model and its
    baseline."""
    if outcomes.size == 0:
        return float("nan")
    return float(outcomes.mean())


def arena_score(games: Sequence[ArenaGame], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score (percent) against the baseline with a 95% interval from a bootstrap over questions.

    Returns {"score", "lo", "hi", "n_questions", "n_games", "n_failed_games", "verdicts": {label: count}}."""
    kept = [g for g in games if g.battles]
    failed = sum(v is None for g in games for v in g.verdicts)
    counts = {label: sum(v == label for g in games for v in g.verdicts) for label in LABELS}
    out: dict[str, Any] = {
        "n_questions": len(kept),
        "n_games": 2 * len(games) - failed,
        "n_failed_games": failed,
        "n_excluded_questions": len(games) - len(kept),
        "verdicts": counts,
    }
    if not kept:
        return {**out, "score": None, "lo": None, "hi": None}
    flat = np.concatenate([np.asarray(g.battles, dtype=float) for g in kept])
    score = 100.0 * bt_win_probability(flat)

    def per_question(rows: np.ndarray) -> float:  # resampled questions keep their battles together
        return 100.0 * bt_win_probability(np.concatenate([np.asarray(kept[int(i)].battles) for i in rows]))

    ci = bootstrap_ci(np.arange(len(kept)), per_question, n_boot=n_boot, seed=seed)
    lo, hi = ci if ci is not None else (None, None)
    return {**out, "score": score, "lo": lo, "hi": hi}


__all__ = [
    "ArenaGame",
    "ArenaJudgeConfig",
    "arena_score",
    "battles_from_verdicts",
    "bt_win_probability",
    "judge_arena",
    "parse_verdict",
]
