"""IFBench constraints with real models: SmolLM2's answers to the shipped IFBench held-out prompts scored by
the verifier (strict and loose) and by the held-out evaluation, and a whole `evarl run` on a tiny Llama with
`task.checkers: all` (IFEval and IFBench constraints in training, evolution and evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evarl.generation.base import SamplingParams
from evarl.tasks import checkers


@pytest.mark.slow
def test_smollm2_answers_scored_on_ifbench_heldout(smollm2_dir: Path, tmp_path: Path) -> None:
    from if_verifiable.api import evaluate_output_for_sample
    from if_verifiable.types import IFBenchSample

    from evarl.eval.heldout import evaluate_heldout
    from evarl.generation.hf import HFGenerator
    from evarl.rewards.verifier import VerifierReward
    from evarl.tasks.default import heldout_prompts

    gen = HFGenerator.from_path(str(smollm2_dir), batch_size=8)
    prompts = heldout_prompts(8, "ifbench")
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=64, seed=0)
    res = evaluate_heldout(gen, prompts, VerifierReward("loose"), params, tmp_path)
    h = res["heldout"]
    assert h["ifeval"]["benchmark"] == "IFBench" and h["n"] == 8 and h["failed"] == 0
    assert h["ifeval"]["n_instructions"] == sum(len(p.constraints) for p in prompts)
    assert 0.0 <= h["ifeval"]["prompt_strict"] <= h["ifeval"]["prompt_loose"] <= 1.0
    assert set(h["ifeval_by_instruction"]) <= set(checkers.registries()["ifbench"])

    rows = [json.loads(x) for x in (tmp_path / "eval_generations.jsonl").read_text().splitlines()]
    strict, loose = VerifierReward("strict"), VerifierReward("loose")
    for p, row in zip(prompts, rows, strict=True):
        text = row["text"]
        assert text.strip(), "SmolLM2 gave an empty answer"
        s, lo = strict.score([p], [text])[0], loose.score([p], [text])[0]
        assert 0.0 <= s.score <= lo.score <= 1.0
        assert row["reward"] == pytest.approx(lo.score)
        # the same verdicts as if-verifiable's own IFBench evaluator (the tagger-free checkers)
        ids = [c.id for c in p.constraints if c.id != checkers.START_VERB]
        if ids:
            kw = [c.kwargs for c in p.constraints if c.id != checkers.START_VERB]
            sample = IFBenchSample(key=0, prompt=p.text, instruction_id_list=ids, kwargs=kw)
            theirs, _ = evaluate_output_for_sample("ifbench", sample, text)
            mine = checkers.check_response(p.text, text, ids, kw)
            assert [(m.strict, m.loose) for m in mine] == [(t.strict_pass, t.loose_pass) for t in theirs]


def test_run_with_ifeval_and_ifbench_checkers(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = {
        "name": "ifmix",
        "output_dir": str(tmp_path / "runs"),
        "seed": 1,
        "rounds": 1,
        "threads": 1,
        "model": {"path": str(tiny_model_dir)},
        "generation": {"n": 2, "max_new_tokens": 8, "temperature": 1.0, "batch_size": 16},
        "task": {"train_prompts": 8, "heldout_prompts": 4, "checkers": "all"},
        "creator": {"methods": ["constraint"], "num_evolutions": 2, "sample_fraction": 0.5},
        "solver": {"batch_size": 2, "epochs": 1, "max_length": 128, "max_prompt_length": 64},
        "eval": {"max_new_tokens": 8},
    }
    path = tmp_path / "ifmix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "evarl.cli", "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "ifmix"

    def ids(name: str) -> set[str]:
        rows = [json.loads(x) for x in next(run.rglob(name)).read_text().splitlines()]
        return {c["id"] for r in rows for c in r.get("constraints", [])}

    assert {checkers.benchmark_of(i) for i in ids("seed_prompts.jsonl")} == {"ifeval", "ifbench"}
    evolved = ids("evolved_all.jsonl")
    assert evolved and all(checkers.benchmark_of(i) in ("ifeval", "ifbench") for i in evolved)
    ev = json.loads((run / "round-001" / "eval.json").read_text())["heldout"]["ifeval"]
    assert ev["benchmark"] == "IFEval+IFBench" and set(ev["by_benchmark"]) == {"ifeval", "ifbench"}
    assert "IFEval+IFBench prompt loose" in (run / "report.md").read_text()
