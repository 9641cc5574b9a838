"""Combining reward sources: r(x, y) = sum_k w_k r_k(x, y) - lambda * |y|.

`build_reward(cfg.reward, policy, policy_tokenizer, device)` builds every configured source through its
factory (`Source.from_config(cfg, policy=..., policy_tokenizer=..., device=...)`) and returns one
`CombinedReward`. The length penalty is RLHFlow's r - lambda*|y| (seed 003_62f5fe925a407d7a.txt, section 3.3).

Device: `device` (a `torch.device`, a setting such as the run's `cfg.device`, or None = CPU) is resolved
once and handed to every source whose `from_config` takes a `device` argument; sources that load a model
(classifier, pairwise, teacher judge) put it and their inputs there, in their `options.dtype` (default auto:
bfloat16 on CUDA, float32 on the CPU). Third-party factories without a `device` parameter are called as before.

Failure protocol (docs/rewards.md): an item that any source with a non-zero weight failed to score is failed
in the combined result (score NaN, `failed=True`); it is excluded from aggregates and pairs downstream and
counted in `CombinedReward.counts`, never scored 0. A source with weight 0 is computed and reported in the
components (monitor-only, e.g. watching the verifier while training on a judge) but cannot fail an item.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from evarl.config import RewardConfig, RewardSourceConfig, parse_bool
from evarl.registry import REWARDS
from evarl.rewards.base import RewardSource
from evarl.types import Prompt, RewardResult


class RewardBuildError(ValueError):
    """A reward source cannot be built from its config (bad mode, unknown option, missing model, ...)."""


def check_options(source: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Reject option keys a source does not read, so that no option is silently ignored."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "(none)"
        raise RewardBuildError(
            f"reward source {source!r}: unknown option(s) {', '.join(unknown)}; known: {known}"
        )


def source_trust_remote_code(cfg: RewardSourceConfig) -> bool:
    """Whether a source may run its model's own code: the source's `trust_remote_code` field (read with
    getattr so configs from before the field existed still work) or the older `options.trust_remote_code`.
    Both are read strictly (evarl.config.parse_bool): "false", "no" or "0" never turn it on, and anything that
    is not a flag is a RewardBuildError."""
    flags = []
    for where, value in (
        ("trust_remote_code", getattr(cfg, "trust_remote_code", False)),
        ("options.trust_remote_code", cfg.options.get("trust_remote_code", False)),
    ):
        flag = parse_bool(value)
        if flag is None:
            raise RewardBuildError(f"reward source {cfg.name!r}: {where}: expected true/false, got {value!r}")
        flags.append(flag)
    return any(flags)


def check_single_sample(source: str, cfg: RewardSourceConfig) -> None:
    """`samples` is a judge setting; a deterministic source must not silently ignore it."""
    if cfg.samples != 1:
        raise RewardBuildError(
            f"reward source {source!r}: `samples` applies to judge only, got {cfg.samples}"
        )


UNITS = ("chars", "tokens")  # of |y| in the length penalty and the `length` source


def response_length(responses: list[str], unit: str, tokenizer: Any = None) -> list[int]:
    """|y| for each response, in characters or tokens (no special tokens)."""
    if unit == "chars":
        return [len(r) for r in responses]
    if unit == "tokens":
        if tokenizer is None:
            raise RewardBuildError("length unit 'tokens' needs a tokenizer")
        if not responses:
            return []
        ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]
    raise RewardBuildError(f"length unit must be one of {', '.join(UNITS)}, got {unit!r}")


def needs_policy_tokenizer(reward: RewardConfig) -> bool:
    """Token-length shaping (reward.length_unit or a `length` source in tokens) measures with the policy's tokenizer."""
    return reward.length_unit == "tokens" or any(
        s.name == "length" and s.mode == "tokens" for s in reward.sources
    )


class FunctionReward:
    """Adapts a plain registered callable `fn(prompts, responses) -> list[float | None | RewardResult]`.

    None or NaN marks an item the function could not score (failed), as in TRL's reward-function API.
    """

    def __init__(self, name: str, fn: Callable[..., list[Any]]) -> None:
        self.name = name
        self.fn = fn

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        out: list[RewardResult] = []
        for v in self.fn(prompts, responses):
            if isinstance(v, RewardResult):
                out.append(v)
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                out.append(RewardResult(float("nan"), failed=True, info={"error": "function returned None"}))
            else:
                out.append(RewardResult(float(v)))
        return out


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether `fn` accepts keyword `name` (explicitly or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_source(
    cfg: RewardSourceConfig, policy: Any = None, policy_tokenizer: Any = None, device: Any = None
) -> RewardSource:
    """One configured source: `from_config` when the registered class has it, else its constructor.

    `device` (None = CPU) reaches `from_config` when it takes a `device` argument (every built-in does)."""
    obj = REWARDS.get(cfg.name)
    if hasattr(obj, "from_config"):
        kwargs: dict[str, Any] = {"policy": policy, "policy_tokenizer": policy_tokenizer}
        if _takes(obj.from_config, "device"):
            kwargs["device"] = device
        return obj.from_config(cfg, **kwargs)
    if inspect.isclass(obj):
        params = inspect.signature(obj).parameters
        kwargs = {}
        if "mode" in params and cfg.mode is not None:
            kwargs["mode"] = cfg.mode
        for k, v in cfg.options.items():
            if k not in params:
                raise RewardBuildError(f"reward source {cfg.name!r}: unknown option {k!r}")
            kwargs[k] = v
        if cfg.model is not None and "model" in params:
            kwargs["model"] = cfg.model
        src = obj(**kwargs)
    elif callable(obj):
        check_options(cfg.name, cfg.options, set())
        src = FunctionReward(cfg.name, obj)
    else:
        raise RewardBuildError(
            f"reward source {cfg.name!r}: registered object is neither a class nor callable"
        )
    if not hasattr(src, "score"):
        raise RewardBuildError(f"reward source {cfg.name!r}: {type(src).__name__} has no score() method")
    return src


class CombinedReward:
    """Weighted sum of sources minus the length penalty; `info` carries every component."""

    name = "combined"

    def __init__(
        self,
        sources: list[tuple[str, float, RewardSource]],
        length_penalty: float = 0.0,
        length_unit: str = "chars",
        tokenizer: Any = None,
    ) -> None:
        if not sources:
            raise RewardBuildError("reward.sources: at least one reward source is needed")
        if length_penalty < 0:
            raise RewardBuildError(f"reward.length_penalty: must be >= 0, got {length_penalty}")
        if length_penalty > 0:
            response_length(["x"], length_unit, tokenizer)  # fail now, not mid-run, on a bad unit/tokenizer
        self.sources = sources
        self.length_penalty = length_penalty
        self.length_unit = length_unit
        self.tokenizer = tokenizer
        # cumulative per-source counts over every call, for the run report
        self.counts: dict[str, dict[str, int]] = {
            label: {"scored": 0, "failed": 0} for label, _, _ in sources
        }

    def score(self, prompts: list[Prompt], responses: list[str]) -> list[RewardResult]:
        n = len(responses)
        if len(prompts) != n:
            raise ValueError(f"score(): {len(prompts)} prompts but {n} responses")
        totals = [0.0] * n
        failed = [False] * n
        components: list[dict[str, float]] = [{} for _ in range(n)]
        failed_sources: list[list[str]] = [[] for _ in range(n)]
        source_info: list[dict[str, Any]] = [{} for _ in range(n)]
        for label, weight, src in self.sources:
            results = src.score(prompts, responses)
            if len(results) != n:
                raise RuntimeError(f"reward source {label!r} returned {len(results)} results for {n} items")
            for i, r in enumerate(results):
                if r.info:
                    source_info[i][label] = r.info
                if r.failed or not math.isfinite(r.score):
                    self.counts[label]["failed"] += 1
                    failed_sources[i].append(label)
                    if weight != 0:
                        failed[i] = True
                    continue
                self.counts[label]["scored"] += 1
                components[i][label] = float(r.score)
                totals[i] += weight * float(r.score)
        lengths = (
            response_length(responses, self.length_unit, self.tokenizer) if self.length_penalty else None
        )
        out: list[RewardResult] = []
        for i in range(n):
            info: dict[str, Any] = {"components": components[i], "sources": source_info[i]}
            if failed_sources[i]:
                info["failed_sources"] = failed_sources[i]
            if lengths is not None:
                pen = -self.length_penalty * lengths[i]
                info["components"]["length_penalty"] = pen
                info["length"] = lengths[i]
                totals[i] += pen
            out.append(RewardResult(float("nan") if failed[i] else totals[i], failed=failed[i], info=info))
        return out


def build_reward(
    cfg: RewardConfig, policy: Any = None, policy_tokenizer: Any = None, device: Any = None
) -> CombinedReward:
    """The run's reward: every source in `cfg.sources`, weighted, minus `cfg.length_penalty * |y|`.

    `policy` (a Generator) is used by self-reward judges (`judge` with model "policy" or unset);
    `policy_tokenizer` measures token lengths when `length_unit` (or a `length` source's mode) is "tokens";
    `device` (the run's `cfg.device` setting, a `torch.device`, or None = CPU) is where model-based sources
    load their models.
    """
    if device is not None:
        from evarl.models.loading import torch_device

        device = torch_device(device)  # resolve "auto"/"cuda:N" once; a bad setting fails before any load
    built: list[tuple[str, float, RewardSource]] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(cfg.sources):
        seen[s.name] = seen.get(s.name, 0) + 1
        label = s.name if seen[s.name] == 1 else f"{s.name}_{seen[s.name]}"
        try:
            src = build_source(s, policy=policy, policy_tokenizer=policy_tokenizer, device=device)
        except RewardBuildError as e:
            raise RewardBuildError(f"reward.sources[{i}] ({s.name}): {e}") from e
        built.append((label, float(s.weight), src))
    return CombinedReward(built, cfg.length_penalty, cfg.length_unit, policy_tokenizer)


def summarize(results: list[RewardResult]) -> dict[str, float | int | None]:
    """Aggregate over scored items only; failed items are counted, never averaged in as 0."""
    ok = [r.score for r in results if not r.failed and math.isfinite(r.score)]
    n_failed = len(results) - len(ok)
    if not ok:
        return {"n": len(results), "n_scored": 0, "n_failed": n_failed, "mean": None, "std": None,
                "min": None, "max": None}  # fmt: skip
    mean = sum(ok) / len(ok)
    var = sum((x - mean) ** 2 for x in ok) / len(ok)
    return {"n": len(results), "n_scored": len(ok), "n_failed": n_failed, "mean": mean,
            "std": math.sqrt(var), "min": min(ok), "max": max(ok)}  # fmt: skip
