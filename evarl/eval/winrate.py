"""Pairwise win rate against a baseline's outputs with any judge `Generator`, and the length-controlled win
rate in the style of AlpacaEval 2.0.

Protocol (seed 002, Exploring Self-Learning and Teacher-Guided Paradigms, §4.1.2; FastChat's pairwise mode):
every (instruction, model output, baseline output) is judged in *both* orders with an AlpacaEval-style
comparison prompt (`evarl/prompts/eval/pairwise.txt`, editable). Both verdicts for the model: win (1); both
for the baseline: loss (0); the two orders disagree: tie (0.5). A verdict that does not parse is a parse
failure: the item is reported in `n_failed` and left out of every rate, never counted as a loss.

Win rate = mean preference x 100, with AlpacaEval's standard error and a seeded percentile-bootstrap interval.

Length-controlled win rate (Dubois et al., 2024, "Length-Controlled AlpacaEval"): a logistic regression of
the preference on tanh(Δlen / std(Δlen)), Δlen = len(model) - len(baseline) in characters, fitted by Newton's
method on the soft labels (ties = 0.5) with a small L2 penalty; the LC win rate is the predicted win rate at
zero length difference, 100 * sigmoid(intercept). Deviation: AlpacaEval's GLM also has a per-instruction
difficulty term estimated from its leaderboard of many models; with one model and one baseline it is not
identifiable and is left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evarl.errors import EndpointError
from evarl.eval.stats import bootstrap_ci
from evarl.generation.base import Generator, SamplingParams
from evarl.io import fill_template, load_template

TEMPLATE_SLOTS = ("instruction", "output_a", "output_b")
_LABEL = re.compile(r"\boutput\s*\(\s*([ab])\s*\)", re.IGNORECASE)
_BARE = re.compile(r"^\W*\(?\s*([ab])\s*\)?\W*$", re.IGNORECASE)


@dataclass
class PairJudgement:
    """One item judged in both orders. `verdicts` = (model shown first, baseline shown first), each
    "model" | "baseline" | None (did not parse); `preference` 1 / 0.5 / 0, or None when a verdict failed."""

    id: str
    instruction: str
    verdicts: tuple[str | None, str | None]
    preference: float | None
    raw: tuple[str, str]
    len_model: int
    len_baseline: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdicts"], d["raw"] = list(self.verdicts), list(self.raw)
        return d


def parse_pairwise_verdict(text: str) -> str | None:
    """ "a" or "b" from a judge reply; None unless exactly one of the two labels is named.

    Accepts "Output (a)" anywhere (case-insensitive, e.g. "**Output (b)**") or a bare "a" / "(b)" reply.
    A reply naming both labels ("Output (a) is worse than Output (b)") is ambiguous and fails.
    """
    labels = {m.lower() for m in _LABEL.findall(text)}
    if len(labels) == 1:
        return labels.pop()
    if not labels:
        m = _BARE.match(text.strip())
        if m:
            return m.group(1).lower()
    return None


def combine_orders(first: str | None, second: str | None) -> float | None:
    """Preference for the model from the two orders' verdicts (each "model" / "baseline" / None)."""
    if first is None or second is None:
        return None
    if first == second:
        return 1.0 if first == "model" else 0.0
    return 0.5


def judge_pairwise(
    judge: Generator,
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    ids: Sequence[str] | None = None,
    template: str | None = None,
    params: SamplingParams | None = None,
) -> list[PairJudgement]:
    """Judge every item in both orders in one batched `generate` call (greedy, short replies by default)."""
    n = len(instructions)
    if not (len(model_outputs) == len(baseline_outputs) == n):
        raise ValueError(
            f"{n} instructions, {len(model_outputs)} model outputs, {len(baseline_outputs)} baseline outputs"
        )
    tpl = template if template is not None else load_template("pairwise", "eval", TEMPLATE_SLOTS)
    params = params or SamplingParams(n=1, temperature=0.0, max_new_tokens=16)
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    convs = []
    for ins, m, b in zip(instructions, model_outputs, baseline_outputs):
        for a, bb in ((m, b), (b, m)):
            convs.append(
                [{"role": "user", "content": fill_template(tpl, instruction=ins, output_a=a, output_b=bb)}]
            )
    outs = judge.generate(convs, params) if convs else []
    errors = sum(1 for o in outs if o and o[0].finish_reason == "error")
    if convs and errors == len(convs):  # not one verdict came back: no win rate, a failed evaluation
        last = getattr(judge, "last_error", None) or "no reason given"
        raise EndpointError(f"judge: all {errors} requests failed; last error: {last}")
    judgements = []
    for i in range(n):
        raw1, raw2 = outs[2 * i][0].text, outs[2 * i + 1][0].text
        p1, p2 = parse_pairwise_verdict(raw1), parse_pairwise_verdict(raw2)
        v1 = None if p1 is None else ("model" if p1 == "a" else "baseline")
        v2 = None if p2 is None else ("model" if p2 == "b" else "baseline")
        judgements.append(
            PairJudgement(
                id=ids[i],
                instruction=instructions[i],
                verdicts=(v1, v2),
                preference=combine_orders(v1, v2),
                raw=(raw1, raw2),
                len_model=len(model_outputs[i]),
                len_baseline=len(baseline_outputs[i]),
            )
        )
    return judgements


# ---------------------------------------------------------------- pure metrics


def fit_length_glm(
    preferences: Sequence[float], len_diff: Sequence[float], l2: float = 0.001, max_iter: int = 100
) -> tuple[float, float]:
    """(intercept, slope) of logit P(model preferred) = intercept + slope * tanh(Δlen / std(Δlen)).

    Cross-entropy on soft labels plus (l2 / 2) * (intercept² + slope²), minimised by damped Newton steps.
    A constant Δlen gives the feature 0 (the slope is then 0 by the penalty).
    """
    y = np.asarray(preferences, dtype=float)
    d = np.asarray(len_diff, dtype=float)
    if y.shape != d.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty preferences ({y.size}) and length differences ({d.size})")
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    X = np.stack([np.ones_like(x), x], axis=1)
    w = np.zeros(2)

    def loss(w: np.ndarray) -> float:
        z = X @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)

    cur = loss(w)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + l2 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:
            new = w - t * step
            nl = loss(new)
            if nl <= cur:
                break
            t /= 2
        w, prev, cur = new, cur, nl
        if np.max(np.abs(t * step)) < 1e-10 or prev - cur < 1e-14:
            break
    return float(w[0]), float(w[1])


def length_controlled_win_rate(
    preferences: Sequence[float], len_diff: Sequence[float], l2: float = 0.001
) -> float:
    """Win rate (%) at zero length difference: 100 * sigmoid(intercept) of `fit_length_glm`."""
    b0, _ = fit_length_glm(preferences, len_diff, l2)
    return float(100.0 / (1.0 + np.exp(-b0)))


def win_rate_summary(
    preferences: Sequence[float | None],
    len_model: Sequence[int] | None = None,
    len_baseline: Sequence[int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    l2: float = 0.001,
) -> dict[str, Any]:
    """Win rate, counts, standard error, bootstrap CI and (given lengths) the LC win rate, all in percent.

    None preferences are parse failures: counted in `n_failed` and excluded from every rate.
    """
    if (
        len_model is not None
        and len_baseline is not None
        and not (len(len_model) == len(len_baseline) == len(preferences))
    ):
        raise ValueError("preferences and lengths differ in length")
    keep = [i for i, p in enumerate(preferences) if p is not None]
    y = np.asarray([preferences[i] for i in keep], dtype=float)
    out: dict[str, Any] = {
        "n_total": len(keep),
        "n_failed": len(preferences) - len(keep),
        "n_wins": int(np.sum(y == 1.0)),
        "n_losses": int(np.sum(y == 0.0)),
        "n_ties": int(np.sum((y > 0.0) & (y < 1.0))),
        "win_rate": None,
        "standard_error": None,
        "win_rate_ci": None,
        "lc_win_rate": None,
        "lc_win_rate_ci": None,
        "confidence": 1 - alpha,
        "bootstrap_samples": n_boot,
        "seed": seed,
    }
    if not keep:
        return out
    out["win_rate"] = float(100 * y.mean())
    out["standard_error"] = float(100 * y.std(ddof=1) / np.sqrt(y.size)) if y.size > 1 else None
    ci = bootstrap_ci(y, np.mean, n_boot, seed, alpha)
    out["win_rate_ci"] = None if ci is None else [100 * ci[0], 100 * ci[1]]
    if len_model is not None and len_baseline is not None:
        lm = np.asarray([len_model[i] for i in keep], dtype=float)
        lb = np.asarray([len_baseline[i] for i in keep], dtype=float)
        out["avg_length_model"] = float(lm.mean())
        out["avg_length_baseline"] = float(lb.mean())
        diff = lm - lb
        out["lc_win_rate"] = length_controlled_win_rate(y, diff, l2)
        rows = np.stack([y, diff], axis=1)
        lc_ci = bootstrap_ci(
            rows, lambda r: length_controlled_win_rate(r[:, 0], r[:, 1], l2), n_boot, seed, alpha
        )
        out["lc_win_rate_ci"] = None if lc_ci is None else list(lc_ci)
    return out


def summarize_judgements(judgements: Sequence[PairJudgement], **kwargs: Any) -> dict[str, Any]:
    """`win_rate_summary` over judged items, plus the rate at which the two orders disagreed."""
    out = win_rate_summary(
        [j.preference for j in judgements],
        [j.len_model for j in judgements],
        [j.len_baseline for j in judgements],
        **kwargs,
    )
    out["order_disagreement"] = out["n_ties"] / out["n_total"] if out["n_total"] else None
    return out
