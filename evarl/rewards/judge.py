"""LLM-as-a-judge: the additive 5-point prompt, k samples averaged, parse failures flagged.

Algorithm: seed 002_f89dd5ef30dd671f.txt (Exploring Self-Learning and Teacher-Guided Paradigms), section 3 and
Figure 4. The judge reads the user's instruction and the response in the additive 5-point prompt
(`evarl/prompts/judge/additive_5point.txt`, editable), justifies briefly and ends with "Score: <points>".
Self-reward (section 3.1) uses the policy itself as the judge (`model: policy` or unset); teacher reward
(section 3.2) uses another local model directory or an OpenAI-compatible endpoint (`options.endpoint`).

Deviations / choices:
- k judge samples per item (`samples`) are averaged over the ones that parse, as in Self-Rewarding LMs; the
  paper samples once. With k > 1 the default temperature is 0.7, with k = 1 greedy decoding.
- Parsing accepts "Score: 4", "**Score:** 4/5", "score of 4", "4 out of 5", "[[4]]", "Score: four"; the last
  "score" statement wins (the prompt asks to conclude with it). A fraction with another denominator is
  rescaled (8/10 -> 4). A value outside [0, max_score] is a parse failure, never clamped, and a bare number is
  never taken. An item with fewer than `min_valid` parsed samples is failed (excluded downstream), never 0.
- A teacher model directory is loaded onto the run's device (`build_reward(..., device=...)`; None = CPU) in
  `options.dtype` (float32 | bfloat16 | float16 | auto, default auto = bfloat16 on CUDA, float32 on the CPU);
  its remote code runs only with the source's `trust_remote_code: true`. A self-reward judge uses the policy
  generator where it already is.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from evarl.config import RewardSourceConfig
from evarl.generation.base import Generator, SamplingParams
from evarl.io import load_template
from evarl.registry import REWARDS
from evarl.rewards.combine import RewardBuildError, check_options, source_trust_remote_code
from evarl.types import Prompt, RewardResult

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts" / "judge"
DEFAULT_TEMPLATE = "additive_5point"

_NUM = r"(\d+(?:\.\d+)?|zero|one|two|three|four|five|six|seven|eight|nine|ten)"
_WORDS = {
    w: i
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
# "Score: 4", "Total score = 4/5", "**Score:** 4", "score of 4", "Final Score - 3 points", "Total points: 3"
_SCORE_RE = re.compile(
    r"(?:score|total points)\s*(?:\*\*|__)?\s*(?::|=|-|\bis\b|\bof\b)\s*(?:\*\*|__)?\s*(?:\bis\b\s*)?"
    + _NUM
    + r"(?:\s*(?:/|out of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
# "4/5", "4 out of 5"
_FRACTION_RE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_BRACKET_RE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


def _num(s: str) -> float:
    s = s.lower()
    return float(_WORDS[s]) if s in _WORDS else float(s)


def parse_score(text: str, max_score: float = 5.0) -> float | None:
    """The judge's score in [0, max_score], or None when the output does not state one."""
    for rx in (_SCORE_RE, _BRACKET_RE, _FRACTION_RE):
        matches = list(rx.finditer(text))
        if not matches:
            continue
        m = matches[-1]
        value = _num(m.group(1))
        denom = m.group(2) if rx.groups >= 2 else None
        if denom is not None:
            d = float(denom)
            if d <= 0:
                return None
            if d != max_score:
                value = value / d * max_score
        if not 0.0 <= value <= max_score:
            return None
        return value
    return None


def conversation_text(messages: list[dict[str, str]]) -> str:
    """The user's side of a prompt as plain text: the single user turn, or role-prefixed turns."""
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return turns[0].get("content", "")
    return "\n\n".join(f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in turns)


def fill(template: str, **values: str) -> str:
    """Replace {name} placeholders in one pass (user text containing braces is left alone)."""
    rx = re.compile("|".join(re.escape("{" + k + "}") for k in values))
    return rx.sub(lambda m: values[m.group(0)[1:-1]], template)


@REWARDS.register("judge")
class JudgeReward:
    """LLM-as-a-judge, additive 5-point prompt (seed 002 Fig. 4): self-reward or teacher; k samples averaged."""

    name = "judge"

    def __init__(
        self,
        generator: Generator,
        template: str | None = None,
        samples: int = 1,
        temperature: float | None = None,
        top_p: float = 1.0,
        max_new_tokens: int = 192,
        max_score: float = 5.0,
        min_valid: int = 1,
        seed: int = 0,
        role: str = "teacher",
    ) -> None:
        if samples < 1:
            raise RewardBuildError(f"judge: samples must be >= 1, got {samples}")
        if not 1 <= min_valid <= samples:
            raise RewardBuildError(f"judge: min_valid must be in [1, samples={samples}], got {min_valid}")
        temperature = (0.7 if samples > 1 else 0.0) if temperature is None else float(temperature)
        if samples > 1 and temperature == 0:
            raise RewardBuildError("judge: samples > 1 with temperature 0 would average identical samples")
        self.generator = generator
        self.template = template or load_template(DEFAULT_TEMPLATE, "judge", ("instruction", "response"))
        self.params = SamplingParams(
            n=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed
        )
        self.max_score = float(max_score)
        self.min_valid = min_valid
        self.role = role  # "self" (policy judges itself) | "teacher"
        self.counts = {"items": 0, "failed_items": 0, "samples": 0, "parse_failures": 0, "errors": 0}

    @classmethod
    def from_config(
        cls,
        cfg: RewardSourceConfig,
        *,
        policy: Generator | None = None,
        policy_tokenizer: Any = None,
        device: Any = None,
    ) -> JudgeReward:
        o = cfg.options
        check_options(
            "judge",
            o,
            {"endpoint", "endpoint_model", "api_key_env", "concurrency", "timeout_s", "max_retries",
             "template", "temperature", "top_p", "max_new_tokens", "max_score", "min_valid", "seed",
             "dtype", "batch_size", "trust_remote_code"},
        )  # fmt: skip
        endpoint_only = {"endpoint_model", "api_key_env", "concurrency", "timeout_s", "max_retries"} & set(o)
        if endpoint_only and not o.get("endpoint"):
            raise RewardBuildError(
                f"judge: option(s) {', '.join(sorted(endpoint_only))} need options.endpoint"
            )
        local_only = {"dtype", "batch_size", "trust_remote_code"} & set(o)
        if local_only and (o.get("endpoint") or cfg.model in (None, "policy")):
            raise RewardBuildError(
                f"judge: option(s) {', '.join(sorted(local_only))} apply to a teacher model directory only"
            )
        if o.get("endpoint"):
            from evarl.generation.openai_api import OpenAIGenerator

            model_name = o.get("endpoint_model") or cfg.model
            if not model_name or model_name == "policy":
                raise RewardBuildError(
                    "judge: options.endpoint needs options.endpoint_model (the served model)"
                )
            gen: Generator = OpenAIGenerator(
                str(o["endpoint"]),
                str(model_name),
                api_key_env=str(o.get("api_key_env", "OPENAI_API_KEY")),
                concurrency=int(o.get("concurrency", 8)),
                timeout_s=float(o.get("timeout_s", 120.0)),
                max_retries=int(o.get("max_retries", 5)),
                raise_on_error=False,  # a failed call fails its item, it does not stop the run
            )
            role = "teacher"
        elif cfg.model in (None, "policy"):
            if policy is None:
                raise RewardBuildError("judge: self-reward (model 'policy') needs the policy generator")
            gen, role = policy, "self"
        else:
            from evarl.generation.hf import HFGenerator
            from evarl.models.loading import resolve_dtype, resolve_model_path

            try:
                dtype = resolve_dtype(str(o.get("dtype", "auto")), device)
            except ValueError as e:
                raise RewardBuildError(f"judge: options.{e}") from e
            gen = HFGenerator.from_path(
                resolve_model_path(cfg.model),
                dtype=dtype,
                batch_size=int(o.get("batch_size", 16)),
                trust_remote_code=source_trust_remote_code(cfg),
                device=device,
            )
            role = "teacher"
        template = load_template(
            str(o.get("template", DEFAULT_TEMPLATE)), "judge", ("instruction", "response")
        )
        return cls(
            gen,
            template=template,
            samples=cfg.samples,
            temperature=o.get("temperature"),
            top_p=float(o.get("top_p", 1.0)),
            max_new_tokens=int(o.get("max_new_tokens", 192)),
            max_score=float(o.get("max_score", 5.0)),
            min_valid=int(o.get("min_valid", 1)),
            seed=int(o.get("seed", 0)),
            role=role,
        )

    def judge_prompt(self, prompt: Prompt, response: str) -> str:
        return fill(self.template, instruction=conversation_text(prompt.messages), response=response)

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        if len(prompts) != len(responses):
            raise ValueError(f"judge: {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        convs = [[{"role": "user", "content": self.judge_prompt(p, r)}] for p, r in zip(prompts, responses)]
        outputs = self.generator.generate(convs, self.params)
        results: list[RewardResult] = []
        for outs in outputs:
            parsed: list[float | None] = []
            errors = 0
            for o in outs:
                if o.finish_reason == "error":
                    errors += 1
                    parsed.append(None)
                else:
                    parsed.append(parse_score(o.text, self.max_score))
            valid = [v for v in parsed if v is not None]
            n_parse_fail = len(outs) - len(valid) - errors
            self.counts["items"] += 1
            self.counts["samples"] += len(outs)
            self.counts["parse_failures"] += n_parse_fail
            self.counts["errors"] += errors
            info: dict[str, Any] = {
                "judge": self.role,
                "raw": [o.text for o in outs],
                "parsed": parsed,
                "parse_failures": n_parse_fail,
            }
            if errors:
                info["errors"] = errors
            if len(valid) < self.min_valid:
                self.counts["failed_items"] += 1
                info["error"] = "judge output did not parse" if not errors else "judge call failed"
                results.append(RewardResult(math.nan, failed=True, info=info))
            else:
                results.append(RewardResult(sum(valid) / len(valid), info=info))
        return results
