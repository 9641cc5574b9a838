"""ScalarRewardModel (the BT reward model format): pooling is padding-invariant, save/load round-trips, and
the format is detected (tiny randomly initialised BERT and Llama backbones built in the test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(cfg, add_pooling_layer=False)


def _llama():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    return LlamaModel(cfg)


@pytest.mark.parametrize("make,pooling", [(_bert, "mean"), (_llama, "last"), (_bert, "cls")])
def test_pooling_ignores_padding(make, pooling):
    from evarl.models.scalar_rm import ScalarRewardModel, default_pooling

    m = ScalarRewardModel(make(), pooling).eval()
    if pooling != "cls":
        assert default_pooling(m.config) == pooling
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        both = m(ids, mask)
        alone = m(ids[1:, :3], mask[1:, :3])
    assert both.shape == (2,)
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_save_load_round_trip(tmp_path: Path):
    from evarl.models.scalar_rm import META_FILE, ScalarRewardModel, is_scalar_reward_model

    m = ScalarRewardModel(_bert(), "mean").eval()
    with torch.no_grad():
        m.head.weight.add_(0.5)
    m.save_pretrained(tmp_path / "rm")
    assert is_scalar_reward_model(tmp_path / "rm") and (tmp_path / "rm" / META_FILE).exists()
    again = ScalarRewardModel.from_pretrained(tmp_path / "rm").eval()
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(m(ids, mask), again(ids, mask), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        ScalarRewardModel(_bert(), "max")
