"""Data and models out of one real (tiny) evarl run: TRL's DPOTrainer trains on the exported pairs as they are,
and the run's final model folder (model card, chat template, unmerged LoRA adapter) loads with transformers and
peft.

The run: a 2-layer random Llama with SmolLM2's tokenizer, 1 round, 8 prompts x 2 responses, no creator, LoRA
with `save_adapter`, a custom `model.chat_template`; a length penalty breaks the verifier's ties so there are
pairs. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evarl.cli import main

MARK = "[EXPORT-TRL-TEST]"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    + MARK
    + "\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("export_trl")
    (root / "chat.jinja").write_text(TEMPLATE)
    args = [
        "run",
        f"output_dir={root / 'runs'}",
        "name=tiny",
        "seed=3",
        "rounds=1",
        "threads=2",
        f"model.path={tiny_model_dir}",
        f"model.chat_template={root / 'chat.jinja'}",
        "generation.n=2",
        "generation.max_new_tokens=8",
        "generation.temperature=1.0",
        "task.train_prompts=8",
        "task.heldout_prompts=4",
        "creator.enabled=false",
        "reward.length_penalty=0.001",
        "solver.batch_size=2",
        "solver.epochs=1",
        "solver.max_length=128",
        "solver.max_prompt_length=96",
        "solver.learning_rate=1e-3",
        "solver.lora.enabled=true",
        "solver.lora.r=4",
        "solver.lora.alpha=8",
        "solver.lora.save_adapter=true",
        "eval.max_new_tokens=8",
        "--quiet",
    ]
    assert main(args) == 0
    return root / "runs" / "tiny"


def test_dpo_trainer_trains_on_exported_pairs_without_conversion(
    run_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset, load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational

    raw = [json.loads(x) for x in (run_dir / "round-001" / "pairs.jsonl").read_text().splitlines()]
    assert raw and all(is_conversational(r) and r["chosen"][0]["role"] == "assistant" for r in raw)
    assert all(r["margin"] > 0 and r["chosen_reward"] > r["rejected_reward"] for r in raw)
    # the run's own file is a dataset TRL reads as is
    assert is_conversational(
        load_dataset("json", data_files=str(run_dir / "round-001" / "pairs.jsonl"))["train"][0]
    )

    out = tmp_path / "pairs_ds"
    assert main(["export", str(run_dir), "--what", "pairs", "--format", "datasets", "--out", str(out)]) == 0
    ds = load_from_disk(str(out))
    assert len(ds) == len(raw) and {"prompt", "chosen", "rejected", "round", "margin"} <= set(ds.column_names)

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=1,
        per_device_train_batch_size=2,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_length=128,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "layers.0.self_attn.q_proj" in n}
    result = trainer.train()
    assert result.global_step == 1
    loss = trainer.state.log_history[0]["loss"]
    assert loss == loss and loss > 0  # a real, finite DPO loss
    assert any(not p.detach().equal(before[n]) for n, p in model.named_parameters() if n in before)


def test_final_model_folder_card_template_and_adapter(run_dir: Path, tiny_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evarl.chat import render_chat
    from evarl.model_card import card_metadata

    final = run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(final)
    card = (final / "README.md").read_text()
    assert card_metadata(final / "README.md")["library_name"] == "transformers"
    assert f"`{tiny_model_dir}`" in card and "- rounds: 1" in card and "solver loss: dpo" in card
    assert "round-001/pairs.jsonl" in card and "| round 1 (this model) |" in card and "(n=4)" in card
    assert "base (round 0)" in card and "LoRA: r 4, alpha 8" in card

    # model.chat_template: generation rendered with it, and the final model folder carries it
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template == TEMPLATE
    assert MARK in render_chat(tok, [{"role": "user", "content": "hi"}])
    from evarl.models.loading import load_tokenizer

    assert load_tokenizer(str(run_dir / "base_model")).chat_template == TEMPLATE

    # the unmerged adapter: applied to the round's starting model it gives the merged model
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, adapter)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, model(ids).logits, atol=1e-4)
