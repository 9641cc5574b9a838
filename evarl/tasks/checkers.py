"""The verifiable instruction checkers: IFEval and IFBench, from `if-verifiable`, loaded offline.

IFEval (Zhou et al., 2023; 25 checkers) and IFBench (Pyatkin et al., 2025, "Generalizing Verifiable Instruction
Following"; 58 checkers) share one protocol: each instruction is a checker id plus keyword arguments, checked
strictly on the response and loosely on IFEval's 8 response variants (markdown `*` removed, first and/or last
line dropped). Their ids are disjoint, so one merged registry serves both, and a prompt may mix them; the
reward (`evarl.rewards.verifier`), the held-out evaluation (`evarl.eval.ifeval`) and the default task's
constraint sampler (`evarl.tasks.constraints`) all read it from here.

Offline loading. Importing `if_verifiable.ifbench` calls `nltk.download` for punkt, punkt_tab, the averaged
perceptron tagger and the stop words. `evarl.tasks.nltk_data` provides punkt_tab and the stop words locally;
the import runs with `nltk.download` replaced by a function that downloads nothing (so no run ever touches
the network), and the names it was asked for are kept in `IFBENCH_MISSING_AT_IMPORT`.

Deviation, one checker: IFBench `words:start_verb` POS-tags the response with NLTK's averaged perceptron
tagger, whose data no PyPI package ships. When that data is installed (`nltk.download(
"averaged_perceptron_tagger_eng")` on a machine with network) it is used, so the check is IFBench's own;
otherwise the same NLTK tokens are tagged by the Pattern lexicon tagger shipped in `textblob` (Brill-style
lexicon and contextual rules, Penn Treebank tags). `pos_tagger_name()` says which one a run used.

Checker errors. A few IFBench checkers raise on unusual text (e.g. `sentence:increment` on a response with no
sentence). IFEval and `if-verifiable` let the exception end the evaluation; here the instruction is counted as
not followed and the exception is kept in `InstructionCheck.error`, so a training run on arbitrary model
output never crashes on its reward and the failure stays visible.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IFEVAL = "ifeval"
IFBENCH = "ifbench"
START_VERB = "words:start_verb"
IFBENCH_MISSING_AT_IMPORT: list[str] = []


@dataclass(frozen=True)
class InstructionCheck:
    instruction_id: str
    strict: bool
    loose: bool
    error: str | None = None  # the checker raised: counted as not followed


def _ifeval_registry() -> dict[str, Any]:
    import langdetect
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    # The language and case checkers call langdetect, which samples at random unless seeded: short answers
    # would pass or fail from one call to the next. Seeded, every evaluation is reproducible.
    langdetect.DetectorFactory.seed = 0
    return dict(INSTRUCTION_DICT)


def _import_ifbench() -> Any:
    """Import if_verifiable.ifbench's registry without letting it download NLTK data."""
    import nltk

    name = "if_verifiable.ifbench.instructions_registry"
    if name in sys.modules:
        return sys.modules[name]
    real = nltk.download

    def no_download(info_or_id: Any = None, *args: Any, **kwargs: Any) -> bool:
        IFBENCH_MISSING_AT_IMPORT.append(str(info_or_id))
        return False

    nltk.download = no_download
    try:
        import if_verifiable.ifbench.instructions_registry as reg
    finally:
        nltk.download = real
    return reg


@functools.cache
def pos_tagger_name() -> str:
    """ "nltk-perceptron" when NLTK's tagger data is installed, else "pattern" (textblob's lexicon tagger)."""
    from evarl.tasks.nltk_data import has_resource

    return "nltk-perceptron" if has_resource("taggers/averaged_perceptron_tagger_eng") else "pattern"


def pos_tag(tokens: list[str]) -> list[tuple[str, str]]:
    """Penn Treebank tags for already tokenized text (NLTK's tagger if installed, else Pattern's)."""
    if not tokens:
        return []
    if pos_tagger_name() == "nltk-perceptron":
        import nltk

        return [(w, t) for w, t in nltk.pos_tag(tokens)]
    from textblob.en import tag

    # tokenize=False: Pattern splits on spaces only, so it tags exactly NLTK's tokens
    tagged = tag(" ".join(t.replace(" ", "_") for t in tokens), tokenize=False)
    return [(w, t) for w, t in tagged]


def _ifbench_registry() -> dict[str, Any]:
    from evarl.tasks.nltk_data import ensure_nltk_data

    ensure_nltk_data()
    reg = _import_ifbench()
    base = reg.INSTRUCTION_DICT[START_VERB]

    class StartWithVerbChecker(base):  # type: ignore[misc, valid-type]
        """IFBench's check with the offline tagger fallback (see the module docstring)."""

        def check_following(self, value: str) -> bool:
            import nltk

            tags = pos_tag(nltk.word_tokenize(value))
            return bool(tags) and "VB" in tags[0][1]

    out = dict(reg.INSTRUCTION_DICT)
    out[START_VERB] = StartWithVerbChecker
    return out


@functools.cache
def registries() -> dict[str, dict[str, Any]]:
    """{"ifeval": id -> checker class, "ifbench": id -> checker class}."""
    from evarl.tasks.nltk_data import ensure_nltk_data

    ensure_nltk_data()
    regs = {IFEVAL: _ifeval_registry(), IFBENCH: _ifbench_registry()}
    shared = set(regs[IFEVAL]) & set(regs[IFBENCH])
    if shared:  # would make an id ambiguous; if-verifiable has kept them apart so far
        raise RuntimeError(f"IFEval and IFBench share checker ids {sorted(shared)}")
    return regs


@functools.cache
def registry() -> dict[str, Any]:
    """All checkers, IFEval's and IFBench's, by id."""
    regs = registries()
    return {**regs[IFEVAL], **regs[IFBENCH]}


def benchmark_of(instruction_id: str) -> str:
    """ "ifeval" or "ifbench" for a known checker id; KeyError otherwise."""
    for name, reg in registries().items():
        if instruction_id in reg:
            return name
    raise KeyError(f"unknown instruction id {instruction_id!r}: not an IFEval or IFBench checker")


def _build(instruction_id: str, kwargs: dict[str, Any] | None) -> tuple[Any, str]:
    reg = registry()
    if instruction_id not in reg:
        raise KeyError(f"unknown instruction id {instruction_id!r}: not an IFEval or IFBench checker")
    checker = reg[instruction_id](instruction_id)
    text = checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
    return checker, text


def make_checker(instruction_id: str, kwargs: dict[str, Any] | None, prompt: str = "") -> Any:
    """A checker built with `kwargs` (None values dropped) and, where it reads it, the prompt."""
    checker, _ = _build(instruction_id, kwargs)
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    return checker


def describe(instruction_id: str, kwargs: dict[str, Any] | None) -> str:
    """The checker's own instruction text for these kwargs."""
    return _build(instruction_id, kwargs)[1].strip()


def _follows(checker: Any, text: str) -> tuple[bool, str | None]:
    try:
        return bool(checker.check_following(text)), None
    except Exception as e:  # noqa: BLE001 - a checker's bug on odd text is a failed instruction, kept visible
        return False, f"{type(e).__name__}: {e}"


def check_response(
    prompt: str, response: str, instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any] | None]
) -> list[InstructionCheck]:
    """Strict and loose pass of every instruction for one response (one result per instruction, in order).

    An empty response fails every instruction (IFEval's rule; `if-verifiable` returns no results for it). An
    unknown id is a KeyError naming it, never skipped.
    """
    from if_verifiable.common import get_loose_transformations, strip_thinking

    if len(kwargs) != len(instruction_ids):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs dicts")
    reg = registry()
    unknown = [i for i in instruction_ids if i not in reg]
    if unknown:
        raise KeyError(f"unknown instruction id(s) {unknown}: not IFEval or IFBench checkers (if_verifiable)")
    response = strip_thinking(response)
    if not response.strip():
        return [InstructionCheck(i, False, False) for i in instruction_ids]
    variants = get_loose_transformations(response)
    out = []
    for iid, kw in zip(instruction_ids, kwargs, strict=True):
        checker = make_checker(iid, kw, prompt)
        strict, error = _follows(checker, response)
        loose = False
        for v in variants:
            if not v.strip():
                continue
            ok, err = _follows(checker, v)
            error = error or err
            if ok:
                loose = True
                break
        out.append(InstructionCheck(iid, strict, loose, error))
    return out
