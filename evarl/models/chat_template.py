"""`model.chat_template`: the policy's tokenizer renders chats with a template the user chose.

Every place that loads the policy tokenizer (the generation backends, Ray actors, vLLM, the reference log-probs,
the trainer, the online loop) loads it from the policy's model directory. So the override is applied once, to a
directory: :func:`with_chat_template` writes ``<run>/base_model/``, a view of the base model whose tokenizer
files are saved with the template and whose other files (weights, config) are symlinks to the original. The run
then uses that directory as its base model; every round's trained model saves the same tokenizer, so the
template is in the final model folder too (``chat_template.jinja``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MARKER = "EVARL_CHAT_TEMPLATE.json"


def local_model_dir(model_path: str) -> Path:
    """A local directory for `model_path`: the path itself, or a hub id's snapshot (the HF cache; fetched when
    not cached and the hub is reachable, as loading the model would)."""
    p = Path(model_path).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_path))


def with_chat_template(
    model_path: str, template: str, out_dir: Path, trust_remote_code: bool = False
) -> Path:
    """`out_dir`: `model_path` with its tokenizer's chat template replaced by `template` (module docstring).

    Idempotent: an `out_dir` made from the same model and template is reused as it is; otherwise it is rebuilt
    (atomically). Nothing is written through a symlink, so the original model is never changed.
    """
    from evarl.io import replace_dir
    from evarl.models.loading import load_tokenizer

    src = local_model_dir(model_path).resolve()
    key = {
        "model": str(src),
        "template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
    }
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == key:
                return out_dir
        except json.JSONDecodeError:
            pass  # a damaged marker: rebuild
    tok: Any = load_tokenizer(str(src), trust_remote_code)
    tok.chat_template = template
    with replace_dir(out_dir) as tmp:
        tok.save_pretrained(tmp)  # real files first; the symlinks below never shadow them
        for entry in sorted(src.iterdir()):
            if entry.name == "README.md" or (tmp / entry.name).exists():
                continue
            os.symlink(entry, tmp / entry.name, target_is_directory=entry.is_dir())
        (tmp / MARKER).write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return out_dir
