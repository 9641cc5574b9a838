"""Models out: the final model folder with its model card (loadable with transformers), the hub upload (HfApi
calls recorded, no network), the unmerged LoRA adapter (loadable with peft) and `model.chat_template`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from evarl.config import chat_template_text, load_config, validate_config
from evarl.eval.stats import fmt_interval, mean_interval
from evarl.io import write_json, write_jsonl
from evarl.model_card import card_metadata, finish_model, heldout_numbers
from evarl.runs import Run, RunLock
from evarl.types import Pair, Prompt

MARK = "[CARD-TEST-TEMPLATE]"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    + MARK
    + "\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    for key in list(RunLock.held):
        RunLock.release(Path(key))


def _eval_round(rd: Path, rewards: list[float], loose: list[bool], with_intervals: bool) -> None:
    """eval.json (+ eval_generations.jsonl) as the evaluation stage writes them; older runs lack `intervals`."""
    rows = [
        {"prompt_id": f"h{i}", "index": 0, "text": "x", "reward": r, "failed": False,
         "ifeval": [{"id": "c", "strict": lo and i % 2 == 0, "loose": lo}]}
        for i, (r, lo) in enumerate(zip(rewards, loose))
    ]  # fmt: skip
    write_jsonl(rd / "eval_generations.jsonl", rows)
    heldout: dict[str, Any] = {"mean_reward": sum(rewards) / len(rewards), "n": len(rewards), "failed": 0,
                               "ifeval": {"benchmark": "IFEval"}}  # fmt: skip
    if with_intervals:
        heldout["intervals"] = {
            "mean_reward": mean_interval(rewards),
            "prompt_strict": mean_interval([float(r["ifeval"][0]["strict"]) for r in rows]),
            "prompt_loose": mean_interval([float(x) for x in loose]),
        }
    write_json(rd / "eval.json", {"heldout": heldout})


def _run(tmp_path: Path, model: str, *overrides: str) -> tuple[Any, Run]:
    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", "name=r", f"model.path={model}", "rounds=2",
                             "solver.beta=0.2", *overrides])  # fmt: skip
    r = Run(cfg).open()
    prompts = [Prompt(f"p{i}", [{"role": "user", "content": f"q{i}"}]) for i in range(3)]
    for t in (1, 2):
        rd = r.round_dir(t)
        write_jsonl(rd / "train_prompts.jsonl", prompts)
        write_jsonl(
            rd / "pairs.jsonl", [Pair(p.id, p.messages, "a", "b", 1.0, 0.0) for p in prompts[: t + 1]]
        )
    _eval_round(r.round_dir(0), [0.0, 0.5, 0.25, 0.25], [False, True, False, False], with_intervals=True)
    _eval_round(r.round_dir(1), [0.5, 0.5, 1.0, 0.0], [True, True, False, False], with_intervals=False)
    _eval_round(r.round_dir(2), [1.0, 0.5, 1.0, 0.75], [True, True, True, False], with_intervals=True)
    return cfg, r


def test_final_model_folder_loads_and_its_card_has_recipe_lineage_and_intervals(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    cfg, r = _run(tmp_path, str(tiny_model_dir))
    src = r.round_dir(2) / "train" / "model"
    shutil.copytree(tiny_model_dir, src)
    before = sorted(p.name for p in src.iterdir())
    final = finish_model(r, cfg, src, 2, log=lambda m: None)

    assert final == r.dir / "model"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.num_hidden_layers == 2
    assert sorted(p.name for p in src.iterdir()) == before  # the round folder is never written to
    assert (final / "model.safetensors").stat().st_ino == (src / "model.safetensors").stat().st_ino  # a link

    card = (final / "README.md").read_text()
    assert card_metadata(final / "README.md") == {
        "library_name": "transformers",
        "tags": ["evarl", "eva", "dpo"],
    }
    assert f"`{tiny_model_dir}`" in card and "- rounds: 2" in card and "solver loss: dpo, beta 0.2" in card
    assert "| 1 | 3 | - | 2 | `round-001/train_prompts.jsonl`, `round-001/pairs.jsonl` |" in card
    assert "| 2 | 3 | - | 3 |" in card
    r2 = mean_interval([1.0, 0.5, 1.0, 0.75])
    assert f"| round 2 (this model) | {fmt_interval(r2)} | 0 |" in card and "(n=4)" in fmt_interval(r2)
    # round 1's eval.json predates stored intervals: recomputed from eval_generations.jsonl, the same way
    assert f"| round 1 | {fmt_interval(mean_interval([0.5, 0.5, 1.0, 0.0]))} |" in card
    assert fmt_interval(mean_interval([1.0, 1.0, 0.0, 0.0])) in card  # round 1 prompt-loose
    assert heldout_numbers(r.round_dir(0))["reward"]["n"] == 4
    assert str(tmp_path / "runs") not in card  # no run directory or name: a resumed run writes the same bytes

    stamp = (final / "README.md").stat().st_mtime_ns
    finish_model(r, cfg, src, 2, log=lambda m: None)  # unchanged source and card: nothing rebuilt
    assert (final / "README.md").stat().st_mtime_ns == stamp


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, touches no network."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw: Any) -> None:
        self.calls.append(("upload_folder", kw))


def test_push_to_hub_uploads_the_final_folder_and_adapter_once(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    RecordingHfApi.calls = []
    tiny = tmp_path / "m"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cfg, r = _run(tmp_path, str(tiny), "model.push_to_hub=me/evarl-tiny", "model.hub_private=true")
    assert validate_config(cfg) == []
    src = r.round_dir(2) / "train" / "model"
    shutil.copytree(tiny, src)
    (src.parent / "adapter").mkdir()
    (src.parent / "adapter" / "adapter_config.json").write_text("{}")
    final = finish_model(r, cfg, src, 2, log=lambda m: None)

    assert RecordingHfApi.calls == [
        ("create_repo", {"repo_id": "me/evarl-tiny", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "me/evarl-tiny", "folder_path": str(final),
                           "commit_message": "evarl: final model of the run"}),
        ("upload_folder", {"repo_id": "me/evarl-tiny", "folder_path": str(r.dir / "adapter"),
                           "path_in_repo": "adapter", "commit_message": "evarl: unmerged LoRA adapter"}),
    ]  # fmt: skip
    card = (final / "README.md").read_text()
    assert 'from_pretrained("me/evarl-tiny")' in card and "`adapter/`" in card
    assert r.manifest["final_model"]["pushed"] == "me/evarl-tiny"
    finish_model(r, cfg, src, 2, log=lambda m: None)  # already uploaded: no second upload
    assert len(RecordingHfApi.calls) == 3


def test_lora_adapter_is_saved_unmerged_and_loads_with_peft(tmp_path: Path, tiny_model_dir: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from evarl.engine import save_hf_model
    from evarl.models.loading import load_tokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        want = model(ids).logits
    save_hf_model(model, None, tmp_path / "model", load_tokenizer(str(tiny_model_dir)), tmp_path / "adapter")

    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert not any("lora" in k for k in merged.state_dict())
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter"
    )
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, want, atol=1e-4)
        assert torch.allclose(merged(ids).logits, want, atol=1e-4)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert not torch.allclose(base, want, atol=1e-3)  # the adapter changed the model


# ---------------------------------------------------------------- model.chat_template


@pytest.mark.parametrize("as_file", [False, True])
def test_chat_template_is_a_string_or_a_jinja_file(tmp_path: Path, as_file: bool) -> None:
    value = TEMPLATE
    if as_file:
        (tmp_path / "t.jinja").write_text(TEMPLATE)
        value = str(tmp_path / "t.jinja")
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    cfg.model.chat_template = value
    assert validate_config(cfg) == []
    assert chat_template_text(value) == TEMPLATE


def test_generation_prompts_use_the_chat_template(tmp_path: Path, tiny_model_dir: Path) -> None:
    from evarl.chat import render_chat
    from evarl.generation.hf import HFGenerator
    from evarl.models.chat_template import with_chat_template
    from evarl.models.loading import load_tokenizer

    original = (tiny_model_dir / "tokenizer_config.json").read_bytes()
    out = with_chat_template(str(tiny_model_dir), TEMPLATE, tmp_path / "base_model")
    gen = HFGenerator.from_path(str(out))
    prompt = render_chat(gen.tokenizer, [{"role": "user", "content": "hello"}])
    assert prompt == f"<|im_start|>user {MARK}\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert (out / "model.safetensors").is_symlink()  # weights are not copied
    assert (tiny_model_dir / "tokenizer_config.json").read_bytes() == original  # the base is untouched
    assert MARK not in (load_tokenizer(str(tiny_model_dir)).chat_template or "")
    # the trained model saves the tokenizer it was given: the template travels to the final model folder
    gen.tokenizer.save_pretrained(tmp_path / "saved")
    assert load_tokenizer(str(tmp_path / "saved")).chat_template == TEMPLATE

    stamp = (out / "tokenizer_config.json").stat().st_mtime_ns
    assert with_chat_template(str(tiny_model_dir), TEMPLATE, out) == out  # same model and template: reused
    assert (out / "tokenizer_config.json").stat().st_mtime_ns == stamp
    with_chat_template(str(tiny_model_dir), TEMPLATE.replace(MARK, "[OTHER]"), out)  # another one: rebuilt
    assert "[OTHER]" in load_tokenizer(str(out)).chat_template
