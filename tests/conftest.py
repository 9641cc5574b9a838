"""Shared fixtures. Real parts: the embedded SmolLM2 (converted once into a session cache) and a tiny random
Llama built from SmolLM2's real tokenizer, for fast integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# keep the 2-core CI machine responsive and runs deterministic
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors directory (converted once, cached in EVARL_CACHE)."""
    from evarl.models.loading import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template."""
    from evarl.models.loading import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", str(smollm2_dir))
