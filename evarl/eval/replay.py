"""Score a file of responses without loading a model, as the original IFEval script and lm-evaluation-harness do.

Zhou, Lu, Mishra, Brahma, Basu, Luan, Zhou, Hou (2023), "Instruction-following evaluation for large language
models", arXiv:2311.07911: `evaluation_main.py` reads `--input_response_data`, JSONL rows
``{"prompt": ..., "response": ...}``, and matches them to the benchmark's prompts by the prompt text. evarl
reads that format and AlpacaEval's ``[{"instruction": ..., "output": ...}]`` (a JSON array, or JSONL), matches
each response to a prompt by its text (whitespace at the ends ignored), and reports what did not match: prompts
without a response are left out of every number and counted (``unmatched_prompts``), responses without a prompt
are counted (``unmatched_outputs``). The responses then go through the same held-out evaluation as generated
ones (`evarl.eval.heldout.evaluate_heldout`), with a `ReplayGenerator` standing in for the model.
"""

from __future__ import annotations

from pathlib import Path

from evarl.generation.base import GenOutput, SamplingParams
from evarl.io import DataError, iter_json_rows
from evarl.types import Prompt


def read_responses(path: str | Path) -> dict[str, str]:
    """prompt text -> response, from IFEval's {prompt, response} rows or AlpacaEval's {instruction, output}."""
    out: dict[str, str] = {}
    for i, row in iter_json_rows(path):
        if "prompt" in row or "response" in row:
            keys = ("prompt", "response")
        elif "instruction" in row or "output" in row:
            keys = ("instruction", "output")
        else:
            raise DataError(
                f"{path}:{i}: expected IFEval's {{prompt, response}} or AlpacaEval's {{instruction, output}}, "
                f"got fields {sorted(row)}"
            )
        for k in keys:
            if not isinstance(row.get(k), str):
                raise DataError(f"{path}:{i}: {k}: expected a string, got {type(row.get(k)).__name__}")
        text = row[keys[0]].strip()
        if text in out and out[text] != row[keys[1]]:
            raise DataError(f"{path}:{i}: {keys[0]}: a second, different response to the same prompt")
        out[text] = row[keys[1]]
    return out


def match_prompts(prompts: list[Prompt], responses: dict[str, str]) -> tuple[list[Prompt], dict[str, int]]:
    """The prompts that have a response (in prompt order) and the counts of what did not match."""
    texts = {p.text.strip() for p in prompts}
    matched = [p for p in prompts if p.text.strip() in responses]
    return matched, {
        "matched": len(matched),
        "unmatched_prompts": len(prompts) - len(matched),
        "unmatched_outputs": sum(1 for t in responses if t not in texts),
    }


class ReplayGenerator:
    """A `Generator` that answers each conversation with the given response to its last user turn."""

    def __init__(self, responses: dict[str, str], name: str = "replay") -> None:
        self.responses = responses
        self.name = name

    def generate(
        self, conversations: list[list[dict[str, str]]], params: SamplingParams
    ) -> list[list[GenOutput]]:
        if params.n != 1:
            raise ValueError(f"a file of responses holds one response per prompt; got n={params.n}")
        out = []
        for conv in conversations:
            text = conv[-1]["content"].strip()
            if text not in self.responses:
                raise KeyError(f"no response for prompt {text[:60]!r}")
            resp = self.responses[text]
            out.append([GenOutput(resp, len(resp.split()), "stop")])
        return out


__all__ = ["ReplayGenerator", "match_prompts", "read_responses"]
