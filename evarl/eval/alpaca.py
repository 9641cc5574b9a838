"""AlpacaEval 2.0 with the installed `alpaca-eval` package: its annotator prompt, its log-prob-weighted
preference and its length-controlled win rate (Dubois et al., 2024, "Length-Controlled AlpacaEval: A Simple
Way to Debias Automatic Evaluators", arXiv:2404.04475).

Nothing of AlpacaEval is copied into evarl; everything below is read from the package at run time (optional
extra `pip install 'evarl[alpaca]'`, which also pins `setuptools<81`: alpaca-eval 0.6.6 imports
`pkg_resources`):

- the annotator: an entry of the package's `evaluators_configs/` (default `weighted_alpaca_eval_gpt4_turbo`,
  the AlpacaEval 2.0 annotator). Its `configs.yaml` names the prompt template (a ChatML-style string whose
  `<|im_start|>role ... <|im_end|>` blocks become chat messages with the package's `prompt_to_chatml`), the
  label tokens and the parser. evarl runs the annotators that decide on the judge's first token with the
  package's `logprob_parser` (`max_tokens: 1`, one example per prompt), listed by `supported_annotators`;
- the order: AlpacaEval's `RandomSwitchTwoColumnsProcessor` swaps output_1 / output_2 per instruction with a
  seed made of the instruction text and the seed (AlpacaEval's default 0), so an instruction is shown in the
  same order as in an AlpacaEval run; the preference is un-swapped (3 - p) by the same processor;
- the preference (AlpacaEval's encoding: 1 = output_1, the baseline, wins; 2 = output_2, the model, wins;
  fractional for the weighted annotator) is the package's `logprob_parser` applied to the judge's first-token
  distribution: ``2 - P(m) / (P(m) + P(M))``. A local transformers judge gives it from one forward pass over
  the prompt in the judge's chat template (the label tokens' exact log-probabilities, plus the top k as an
  OpenAI endpoint would return them); an OpenAI-compatible endpoint from one chat completion with
  ``logprobs``, ``top_logprobs`` and ``max_tokens: 1`` (a label missing from the top k has probability 0, as
  in AlpacaEval; neither label present is a counted failure, never a loss);
- the win rate and counts are the package's `get_winrate`; the length-controlled win rate is the package's
  `get_length_controlled_winrate` (GLM ``tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline``
  regularised towards two length-gamed baselines) when every instruction is one of AlpacaEval's 805 — matched
  by text to the user's copy of `alpaca_eval.json`, whose row number is the instruction's index in the
  package's difficulty table (`df_gamed.csv`, which the package fetches from the Hugging Face hub; evarl lets it read only the local cache, never download). For
  other prompts (or when that table cannot be fetched) the difficulty term cannot be estimated and evarl's own
  GLM without it is used (`evarl.eval.winrate.length_controlled_win_rate`); the output says which and why.

Every rate carries n and a seeded 95% percentile-bootstrap interval over instructions; the package's
standard errors are reported next to them (its `lc_standard_error` is the spread of the GLM's per-instruction
predictions, not a sampling error of the LC win rate).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from evarl.config import ConfigError
from evarl.errors import EndpointError
from evarl.eval.stats import bootstrap_ci

ALPACA_EXTRA = "evarl[alpaca]"
DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
SWITCH_COLUMN = "is_switched_outputs"  # AlpacaEval's column name; it is part of the order's seed string
FATAL_STATUS = {401, 403, 404}


# ---------------------------------------------------------------- the package


@dataclass
class AlpacaEvalPackage:
    """The installed `alpaca-eval` modules evarl uses."""

    version: str
    configs_dir: Path
    utils: Any
    parsers: Any
    processors: Any
    winrate: Any
    glm: Any


def import_alpaca_eval(flag: str = "--alpaca-annotator") -> AlpacaEvalPackage:
    """The installed package, or a ConfigError naming the extra to install."""
    try:
        with warnings.catch_warnings():  # 0.6.6 warns that pkg_resources is deprecated on every import
            warnings.simplefilter("ignore")
            import alpaca_eval
            from alpaca_eval import completion_parsers, constants, processors, utils
            from alpaca_eval.metrics import glm_winrate, winrate
    except ModuleNotFoundError as e:
        if e.name == "pkg_resources":
            raise ConfigError(
                [
                    f"{flag}: the installed alpaca-eval imports pkg_resources, which setuptools>=81 no longer "
                    f"ships: pip install 'setuptools<81' (pip install '{ALPACA_EXTRA}' pins it)"
                ]
            ) from None
        raise ConfigError(
            [
                f"{flag}: AlpacaEval needs the optional package alpaca-eval, which is not installed "
                f"(missing module {e.name!r}): pip install '{ALPACA_EXTRA}'"
            ]
        ) from None
    return AlpacaEvalPackage(
        version=str(getattr(alpaca_eval, "__version__", "unknown")),
        configs_dir=Path(constants.EVALUATORS_CONFIG_DIR),
        utils=utils,
        parsers=completion_parsers,
        processors=processors,
        winrate=winrate,
        glm=glm_winrate,
    )


# ---------------------------------------------------------------- the annotator


@dataclass
class AlpacaAnnotator:
    """A single-token log-prob annotator of the installed package (its `evaluators_configs/NAME`)."""

    name: str
    template: str
    template_file: str
    numerator_token: str
    denominator_tokens: list[str]
    is_binarize: bool
    top_logprobs: int
    temperature: float
    config_model: str | None
    package: AlpacaEvalPackage = field(repr=False)

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys([self.numerator_token, *self.denominator_tokens]))

    @property
    def source(self) -> str:
        return (
            f"alpaca-eval {self.package.version} evaluators_configs/{self.name} (prompt {self.template_file})"
        )

    def preference(self, top_logprobs: list[dict[str, Any]] | None) -> float:
        """AlpacaEval's preference from the first token's top log-probabilities (the package's parser); NaN
        when there is nothing to parse."""
        if not top_logprobs:
            return math.nan
        first = top_logprobs[0]
        completion = {
            "logprobs": {
                "content": [
                    {"token": first["token"], "logprob": first["logprob"], "top_logprobs": top_logprobs}
                ]
            }
        }
        with _quiet():
            value = self.package.parsers.logprob_parser(
                completion,
                numerator_token=self.numerator_token,
                denominator_tokens=list(self.denominator_tokens),
                is_binarize=self.is_binarize,
            )[0]
        return float(value)


def _single_token_problem(cfg: dict[str, Any]) -> str | None:
    """Why an annotator config is not one evarl runs (first-token log-prob parser, one example per prompt)."""
    if cfg.get("fn_completion_parser") != "logprob_parser":
        return f"its parser is {cfg.get('fn_completion_parser')!r}, not 'logprob_parser'"
    kw = cfg.get("completions_kwargs") or {}
    pk = cfg.get("completion_parser_kwargs") or {}
    if kw.get("max_tokens") != 1 or pk.get("log_prob_index", "batch") not in ("batch", 0):
        return "it reads a token after a generated reasoning, not the first token"
    if int(cfg.get("batch_size", 1)) != 1 or cfg.get("processors_to_kwargs"):
        return "it batches several examples in one prompt or needs extra processors"
    if not pk.get("numerator_token") or not pk.get("denominator_tokens"):
        return "it names no label tokens"
    return None


def _read_config(pkg: AlpacaEvalPackage, name: str) -> dict[str, Any] | None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = pkg.configs_dir / name / "configs.yaml"
    if not path.is_file():
        return None
    cfg = pkg.utils.load_configs(path)
    entry = cfg.get(name) if name in cfg else (next(iter(cfg.values())) if len(cfg) == 1 else None)
    return entry if isinstance(entry, dict) else None


def supported_annotators(pkg: AlpacaEvalPackage | None = None) -> list[str]:
    """The installed package's annotators that evarl runs (single-token log-prob ones), sorted."""
    pkg = pkg or import_alpaca_eval()
    out = []
    for d in sorted(p for p in pkg.configs_dir.iterdir() if p.is_dir()):
        try:
            cfg = _read_config(pkg, d.name)
        except Exception:  # noqa: BLE001 - a config that does not load is simply not offered
            continue
        if cfg is not None and _single_token_problem(cfg) is None:
            out.append(d.name)
    return out


def load_annotator(name: str = DEFAULT_ANNOTATOR, flag: str = "--alpaca-annotator") -> AlpacaAnnotator:
    """The annotator `name` of the installed package; a ConfigError naming the ones evarl runs otherwise."""
    pkg = import_alpaca_eval(flag)
    cfg = _read_config(pkg, name)
    if cfg is None:
        raise ConfigError(
            [
                f"{flag}: unknown annotator {name!r}: not an evaluators_configs entry of alpaca-eval "
                f"{pkg.version}; the ones evarl runs: {', '.join(supported_annotators(pkg))}"
            ]
        )
    problem = _single_token_problem(cfg)
    if problem:
        raise ConfigError(
            [
                f"{flag}: annotator {name!r} is not a single-token log-prob annotator ({problem}); the ones "
                f"evarl runs: {', '.join(supported_annotators(pkg))}"
            ]
        )
    template_file = str(cfg["prompt_template"])
    path = pkg.configs_dir / template_file
    if not path.is_file():
        raise ConfigError([f"{flag}: annotator {name!r}: its prompt template {path} is missing"])
    kw = cfg.get("completions_kwargs") or {}
    pk = cfg["completion_parser_kwargs"]
    return AlpacaAnnotator(
        name=name,
        template=path.read_text(encoding="utf-8"),
        template_file=template_file,
        numerator_token=str(pk["numerator_token"]),
        denominator_tokens=[str(t) for t in pk["denominator_tokens"]],
        is_binarize=bool(pk.get("is_binarize", True)),
        top_logprobs=int(kw.get("top_logprobs", 5)),
        temperature=float(kw.get("temperature", 1.0)),
        config_model=kw.get("model_name"),
        package=pkg,
    )


def read_alpaca_eval_set(path: str | Path) -> dict[str, int]:
    """instruction -> index (row number from 0) in the user's copy of AlpacaEval's `alpaca_eval.json`, the
    index of the package's per-instruction difficulty table. A repeated instruction keeps its first index."""
    from evarl.eval.formats import EvalFileError, read_alpaca

    items = read_alpaca(path)  # names file:row and field 'instruction' for a row without one
    if not items:
        raise EvalFileError(f"{path}: holds no instructions")
    index: dict[str, int] = {}
    for k, it in enumerate(items):
        index.setdefault(it.instruction, k)
    return index


# ---------------------------------------------------------------- judges


class LogprobJudge(Protocol):
    """A judge that returns the first token's top log-probabilities of each conversation's reply."""

    last_error: str | None

    def first_token_logprobs(
        self, conversations: list[list[dict[str, str]]], labels: Sequence[str], top_k: int
    ) -> list[list[dict[str, Any]] | None]:
        """Per conversation: `[{"token", "logprob"}, ...]` (OpenAI's `top_logprobs` entries), or None when
        the request failed."""
        ...


class HFLogprobJudge:
    """A local transformers causal LM: one forward pass over each rendered prompt (chat template with the
    generation prompt); the label tokens' log-probabilities are always included, with the top k."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, max_prompt_tokens: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_prompt_tokens = int(max_prompt_tokens or ctx or 4096)
        self.last_error: str | None = None
        self.n_truncated = 0

    @classmethod
    def from_path(cls, path: str, batch_size: int = 8, device: str = "auto") -> HFLogprobJudge:
        from evarl.dist import resolve_device
        from evarl.models.loading import load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path

        resolved = resolve_model_path(path)
        dev = resolve_device(device)
        # bfloat16 on a bf16-capable GPU (paper-scale judges), float32 elsewhere
        model = load_causal_lm(resolved, resolve_dtype("auto", dev), device=dev)
        return cls(model, load_tokenizer(resolved), batch_size)

    def label_ids(self, labels: Sequence[str]) -> dict[str, int]:
        out = {}
        for lab in labels:
            ids = self.tokenizer.encode(lab, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(
                    [
                        f"--judge: the judge's tokenizer splits the label {lab!r} into {len(ids)} tokens; "
                        "AlpacaEval's log-prob annotators need single-token labels"
                    ]
                )
            out[lab] = int(ids[0])
        return out

    def first_token_logprobs(
        self, conversations: list[list[dict[str, str]]], labels: Sequence[str], top_k: int
    ) -> list[list[dict[str, Any]] | None]:
        import torch

        from evarl.models.loading import device_of
        from evarl.truncation import fit_prompt

        tok = self.tokenizer
        lab_ids = self.label_ids(labels)
        by_id = {v: k for k, v in lab_ids.items()}
        device = device_of(self.model)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        out: list[list[dict[str, Any]] | None] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(conversations), self.batch_size):
                chunk = conversations[start : start + self.batch_size]
                encoded = []
                for conv in chunk:
                    ids, cut = fit_prompt(tok, [{"role": m["role"], "content": m["content"]} for m in conv],
                                          self.max_prompt_tokens)  # fmt: skip
                    self.n_truncated += int(cut)
                    encoded.append(ids)
                width = max(len(x) for x in encoded)
                input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in encoded], device=device)
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in encoded], device=device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt starts at 0
                with torch.inference_mode():
                    logits = self.model(
                        input_ids=input_ids, attention_mask=mask, position_ids=positions
                    ).logits
                logits = logits[:, -1, :]
                logp = torch.log_softmax(logits.float(), dim=-1)
                k = min(int(top_k), logp.shape[-1])
                top_v, top_i = logp.topk(k, dim=-1)
                for row in range(len(chunk)):
                    entries: list[dict[str, Any]] = []
                    for v, i in zip(top_v[row].tolist(), top_i[row].tolist()):
                        text = by_id.get(i) or tok.decode([i])
                        if i in by_id or text not in lab_ids:  # a label's string means that label's token
                            entries.append({"token": text, "logprob": float(v)})
                    present = {e["token"] for e in entries}
                    for lab, i in lab_ids.items():
                        if lab not in present:
                            entries.append({"token": lab, "logprob": float(logp[row, i])})
                    out.append(entries)
        finally:
            if was_training:
                self.model.train()
        return out


class EndpointLogprobJudge:
    """An OpenAI-compatible endpoint: one chat completion per prompt with `logprobs`, `top_logprobs` and
    `max_tokens: 1`, on the `openai` client (its timeouts and retries). The key comes only from the environment
    variable `api_key_env` and goes only over https or to loopback (`evarl.endpoints`); successful responses are
    cached on disk under `evarl.models.loading.cache_dir()/"api"`, keyed like `OpenAIGenerator`'s."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 5,
        concurrency: int = 8,
        temperature: float = 1.0,
        cache_dir: str | Path | None = None,
    ) -> None:
        from evarl.endpoints import endpoint_problem

        problem = endpoint_problem(endpoint, api_key_env)
        if problem:
            raise EndpointError(problem)
        self.base_url = endpoint.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = max(1, int(concurrency))
        self.temperature = float(temperature)
        if cache_dir is None:
            from evarl.models.loading import cache_dir as root

            cache_dir = root() / "api"
        self.cache_dir = Path(cache_dir)
        self.last_error: str | None = None
        self.stats = {"requests": 0, "cache_hits": 0, "errors": 0}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"EndpointLogprobJudge({self.base_url!r}, {self.model!r}, api_key_env={self.api_key_env!r})"

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def first_token_logprobs(
        self, conversations: list[list[dict[str, str]]], labels: Sequence[str], top_k: int
    ) -> list[list[dict[str, Any]] | None]:
        from evarl.endpoints import endpoint_problem, read_api_key

        try:
            import openai
        except ModuleNotFoundError as e:  # pragma: no cover - a dependency of evarl
            raise EndpointError(
                "the endpoint judge needs the `openai` package: pip install 'openai>=1.40'"
            ) from e
        key = read_api_key(self.api_key_env)
        problem = endpoint_problem(self.base_url, self.api_key_env)
        if problem:
            raise EndpointError(problem, fatal=True)
        client = openai.OpenAI(base_url=self.base_url, api_key=key or "no-key", timeout=self.timeout_s,
                               max_retries=self.max_retries)  # fmt: skip
        extra: dict[str, Any] = {} if key else {"extra_headers": {"Authorization": openai.Omit()}}

        def one(messages: list[dict[str, str]]) -> list[dict[str, Any]] | None:
            return self._request(client, openai, key, messages, int(top_k), extra)

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(conversations))))
        try:
            return list(pool.map(one, conversations))
        finally:  # a failure of the whole endpoint cancels the requests not yet sent
            pool.shutdown(wait=True, cancel_futures=True)

    def _request(
        self, client: Any, openai: Any, key: str | None, messages: list[dict[str, str]], top_k: int,
        extra: dict[str, Any],
    ) -> list[dict[str, Any]] | None:  # fmt: skip
        from evarl.endpoints import redact
        from evarl.generation.openai_api import cache_key
        from evarl.io import write_json

        body = {"max_tokens": 1, "temperature": self.temperature, "logprobs": True, "top_logprobs": top_k}
        key_hash = cache_key(self.base_url, self.model, messages, body)
        path = self.cache_dir / key_hash[:2] / f"{key_hash}.logprobs.json"
        if path.is_file():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))["top_logprobs"]
                self._count("cache_hits")
                return cached
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is fetched again
        self._count("requests")
        try:
            resp = client.chat.completions.create(model=self.model, messages=messages, **body, **extra)
            data = resp.model_dump() if hasattr(resp, "model_dump") else dict(resp)
            content = data["choices"][0]["logprobs"]["content"]
            top = [
                {"token": str(t["token"]), "logprob": float(t["logprob"])} for t in content[0]["top_logprobs"]
            ]
        except openai.APITimeoutError as e:  # this request only (after the client's retries): a failure
            self._count("errors")
            self.last_error = (
                f"request to {self.url} timed out after {self.timeout_s}s ({redact(str(e), key)[:100]})"
            )
            return None
        except openai.APIConnectionError as e:
            raise EndpointError(
                f"cannot reach {self.url}: {redact(str(e.__cause__ or e), key)}", fatal=True
            ) from e
        except openai.APIStatusError as e:
            status = int(e.status_code)
            msg = redact(str(getattr(e, "message", "") or e), key)[:300]
            if status in FATAL_STATUS:
                hint = f" (is {self.model!r} the name the server serves?)" if status == 404 else ""
                raise EndpointError(f"HTTP {status} from {self.url}: {msg}{hint}", status, fatal=True) from e
            self._count("errors")
            self.last_error = f"HTTP {status} from {self.url}: {msg}"
            return None
        except (openai.OpenAIError, KeyError, IndexError, TypeError, ValueError) as e:
            self._count("errors")
            self.last_error = (
                f"{self.url}: no first-token logprobs in the reply ({redact(str(e), key)[:200]})"
            )
            return None
        write_json(path, {"top_logprobs": top})
        return top


# ---------------------------------------------------------------- annotation


def _flip_preference(df: Any) -> Any:
    """AlpacaEval's un-swap of a switched row: preference p -> 3 - p (2 <-> 1, fractions in between)."""
    if df.empty or "preference" not in df.columns:
        return df
    df = df.copy()
    df["preference"] = df["preference"].apply(lambda x: 3 - x)
    return df


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, np.generic):
        return _nan_to_none(x.item())
    return x


def annotate(
    judge: LogprobJudge,
    annotator: AlpacaAnnotator,
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    baseline_outputs: Sequence[str],
    model_name: str,
    baseline_name: str,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """AlpacaEval annotations, one per instruction, in the package's format: `instruction`, `output_1` (the
    baseline), `output_2` (the model), `generator_1`, `generator_2`, `annotator`, `preference` (None when it
    could not be parsed), `is_switched_outputs` (the order shown to the judge) and `raw_completion` (the
    first token's top log-probabilities)."""
    import pandas as pd

    n = len(instructions)
    if not (len(model_outputs) == len(baseline_outputs) == n):
        raise ValueError(
            f"{n} instructions, {len(model_outputs)} model outputs, {len(baseline_outputs)} baseline outputs"
        )
    pkg = annotator.package
    df = pd.DataFrame(
        {
            "instruction": list(instructions),
            "output_1": list(baseline_outputs),
            "output_2": list(model_outputs),
        }
    )
    switcher = pkg.processors.RandomSwitchTwoColumnsProcessor(
        two_columns_to_switch=["output_1", "output_2"],
        fn_replace_if_switch=_flip_preference,
        random_seed_columns=["instruction"],
        _switch_column=SWITCH_COLUMN,
        seed=seed,
    )
    shown = switcher.preprocess(df)
    switched = [bool(x) for x in shown[SWITCH_COLUMN]]
    # identical outputs are a draw (1.5) without asking the judge, as AlpacaEval's pairwise annotator does
    asked = [k for k in range(n) if df["output_1"].iloc[k] != df["output_2"].iloc[k]]
    prompts, _ = pkg.utils.make_prompts(shown.iloc[asked], annotator.template) if asked else ([], shown)
    conversations = [
        [{"role": m["role"], "content": m["content"]} for m in pkg.utils.prompt_to_chatml(p)] for p in prompts
    ]
    replies = (
        judge.first_token_logprobs(conversations, annotator.labels, annotator.top_logprobs) if asked else []
    )
    if asked and all(t is None for t in replies):
        last = getattr(judge, "last_error", None) or "no reason given"
        raise EndpointError(f"judge: all {len(asked)} requests failed; last error: {last}")
    tops: list[list[dict[str, Any]] | None] = [None] * n
    for k, t in zip(asked, replies):
        tops[k] = t
    asked_set = set(asked)
    shown["preference"] = [annotator.preference(tops[k]) if k in asked_set else 1.5 for k in range(n)]
    back = switcher.postprocess(shown)
    rows = []
    for k in range(n):
        rows.append(
            {
                "instruction": instructions[k],
                "output_1": back["output_1"].iloc[k],
                "output_2": back["output_2"].iloc[k],
                "generator_1": baseline_name,
                "generator_2": model_name,
                "annotator": annotator.name,
                "preference": _nan_to_none(float(back["preference"].iloc[k])),
                SWITCH_COLUMN: switched[k],
                "raw_completion": tops[k],
            }
        )
    return rows


# ---------------------------------------------------------------- metrics


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The package's warnings and log lines (sklearn deprecations, 'extreme change' notes) kept off the
    terminal; evarl reports its own notes."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _package_frame(annotations: Sequence[dict[str, Any]], index: Sequence[int] | None = None) -> Any:
    """Annotations as the package's metrics read them: preference as float (NaN = failed); the frame's index
    is AlpacaEval's instruction index when given (the package reads it with `reset_index`)."""
    import pandas as pd

    cols = ["instruction", "output_1", "output_2", "generator_1", "generator_2", "annotator", "preference"]
    df = pd.DataFrame([{c: a.get(c) for c in cols} for a in annotations], columns=cols)
    df["preference"] = df["preference"].astype(float)
    if index is not None:
        df.index = pd.Index([int(i) for i in index])
    return df


def package_lc_win_rate(pkg: AlpacaEvalPackage, frame: Any) -> dict[str, Any]:
    """The package's `get_length_controlled_winrate` (GLM `length_controlled_v1`) on an annotation frame, with
    nothing written into the package's folder; numpy scalars as plain floats / ints."""
    import functools

    import sklearn

    # evarl never downloads at run time: the package's hub fetch of df_gamed.csv reads the local Hugging Face
    # cache only (put it there beforehand with `huggingface-cli download tatsu-lab/alpaca_eval df_gamed.csv
    # --repo-type dataset`); a missing file raises OSError and the caller falls back to evarl's GLM, saying why
    fetch = pkg.glm.hf_hub_download
    pkg.glm.hf_hub_download = functools.partial(fetch, local_files_only=True)
    try:
        with (
            _quiet(),
            sklearn.config_context(),
        ):  # the package switches sklearn's metadata routing on globally
            res = pkg.glm.get_length_controlled_winrate(
                frame, save_weights_dir=None, is_add_glm_preference_inplace=False
            )
    finally:
        pkg.glm.hf_hub_download = fetch
    return {k: _nan_to_none(v) for k, v in res.items()}


def _ci100(values: np.ndarray, n_boot: int, seed: int) -> list[float] | None:
    ci = bootstrap_ci(values, np.mean, n_boot, seed)
    return None if ci is None else [100 * ci[0], 100 * ci[1]]


def alpaca_summary(
    annotations: Sequence[dict[str, Any]],
    annotator: AlpacaAnnotator,
    alpaca_index: dict[str, int] | None = None,
    n_boot: int = 1000,
    lc_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Win rate, discrete win rate and LC win rate (percent), each with n and a 95% bootstrap interval over
    instructions, the package's counts and standard errors, and which LC computation was used and why."""
    from evarl.eval.winrate import win_rate_summary

    pkg = annotator.package
    prefs = [a.get("preference") for a in annotations]
    ok = [k for k, p in enumerate(prefs) if p is not None]
    y = np.asarray([prefs[k] - 1.0 for k in ok], dtype=float)  # P(model preferred), AlpacaEval's [0, 1]
    out: dict[str, Any] = {
        "annotator": annotator.name,
        "annotator_source": annotator.source,
        "n": len(ok),
        "n_failed": len(prefs) - len(ok),
        "confidence": 0.95,
        "bootstrap_samples": n_boot,
        "seed": seed,
        "win_rate": None,
        "win_rate_ci": None,
        "discrete_win_rate": None,
        "discrete_win_rate_ci": None,
        "lc_win_rate": None,
        "lc_win_rate_ci": None,
        "lc_method": None,
        "lc_note": None,
    }
    if not ok:
        out["lc_note"] = "no preference could be parsed: no win rate"
        return out
    with _quiet():
        pw = pkg.winrate.get_winrate(_package_frame([annotations[k] for k in ok]))
    out.update(
        win_rate=float(pw["win_rate"]),
        standard_error=_nan_to_none(pw["standard_error"]),
        n_wins=int(pw["n_wins"]),
        n_wins_base=int(pw["n_wins_base"]),
        n_draws=int(pw["n_draws"]),
        discrete_win_rate=float(pw["discrete_win_rate"]),
    )
    out["win_rate_ci"] = _ci100(y, n_boot, seed)
    disc = np.where(y > 0.5, 1.0, np.where(y < 0.5, 0.0, 0.5))
    out["discrete_win_rate_ci"] = _ci100(disc, n_boot, seed)
    lm = np.asarray([len(annotations[k]["output_2"]) for k in ok], dtype=float)
    lb = np.asarray([len(annotations[k]["output_1"]) for k in ok], dtype=float)
    out["avg_length_model"], out["avg_length_baseline"] = float(lm.mean()), float(lb.mean())
    for key, arr in (("avg_length_model_ci", lm), ("avg_length_baseline_ci", lb)):
        ci = bootstrap_ci(arr, np.mean, n_boot, seed)
        out[key] = None if ci is None else [ci[0], ci[1]]

    reason = _package_lc_reason(annotations, alpaca_index)
    if reason is None and alpaca_index is not None:
        frame = _package_frame(annotations, [alpaca_index[a["instruction"]] for a in annotations])
        try:
            res = package_lc_win_rate(pkg, frame)
        except OSError as e:  # the hub's table cannot be fetched (offline, gated, moved): evarl's GLM instead
            reason = (
                "the package's difficulty table (df_gamed.csv from the Hugging Face hub) could not be read "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); the difficulty term "
                "is left out"
            )
        else:
            rng = np.random.default_rng(seed)
            reps, failed = [], 0
            for _ in range(lc_boot):
                pick = rng.integers(0, len(frame), size=len(frame))
                try:  # a degenerate resample the GLM cannot fit is counted, not fatal
                    rep = package_lc_win_rate(pkg, frame.iloc[pick])["length_controlled_winrate"]
                except ValueError:
                    rep = None
                if rep is None:
                    failed += 1
                else:
                    reps.append(float(rep))
            lo_hi = None
            if reps:
                lo, hi = np.quantile(np.asarray(reps), [0.025, 0.975])
                lo_hi = [float(lo), float(hi)]
            out.update(
                lc_win_rate=res["length_controlled_winrate"],
                lc_win_rate_ci=lo_hi,
                lc_standard_error=res.get("lc_standard_error"),
                lc_bootstrap_samples=len(reps),
                lc_bootstrap_failed=failed,
                lc_n=len(frame),
                lc_method="alpaca_eval",
                lc_note=(
                    "AlpacaEval's own GLM (alpaca_eval.metrics.get_length_controlled_winrate, length_controlled_v1, "
                    "with the per-instruction difficulty term): every instruction is one of AlpacaEval's "
                    "(--alpaca-eval-set); lc_standard_error is the package's (spread of the per-instruction "
                    "predictions), lc_win_rate_ci a bootstrap over instructions refitting the package's GLM"
                ),
            )
            return out
    summ = win_rate_summary([float(v) for v in y], lm.tolist(), lb.tolist(), n_boot=n_boot, seed=seed)
    out.update(
        lc_win_rate=summ["lc_win_rate"],
        lc_win_rate_ci=summ["lc_win_rate_ci"],
        lc_n=len(ok),
        lc_bootstrap_samples=n_boot,
        lc_method="evarl",
        lc_note=(
            f"evarl's GLM on tanh(Δlen / std(Δlen)) without AlpacaEval's per-instruction difficulty term: {reason}"
        ),
    )
    return out


def _package_lc_reason(
    annotations: Sequence[dict[str, Any]], alpaca_index: dict[str, int] | None
) -> str | None:
    """None when the package's LC applies; else why not."""
    if alpaca_index is None:
        return (
            "no --alpaca-eval-set given, so the instructions cannot be matched to AlpacaEval's 805 and their "
            "difficulty is unknown"
        )
    missing = [a["instruction"] for a in annotations if a["instruction"] not in alpaca_index]
    if missing:
        return (
            f"{len(missing)} of {len(annotations)} instructions are not in --alpaca-eval-set (e.g. "
            f"{missing[0][:60]!r}); the difficulty term exists only for AlpacaEval's own instructions"
        )
    return None


__all__ = [
    "ALPACA_EXTRA",
    "DEFAULT_ANNOTATOR",
    "AlpacaAnnotator",
    "AlpacaEvalPackage",
    "EndpointLogprobJudge",
    "HFLogprobJudge",
    "LogprobJudge",
    "alpaca_summary",
    "annotate",
    "import_alpaca_eval",
    "load_annotator",
    "package_lc_win_rate",
    "read_alpaca_eval_set",
    "supported_annotators",
]
