"""The scalar reward model trained by `train_bt`: a pretrained backbone, a pooling rule and a linear head.

Bradley-Terry reward models (seed 003_62f5fe925a407d7a.txt, section 2.1) replace the LM head with a linear
head predicting a scalar. Decoder backbones pool the last non-padding token (as
`AutoModelForSequenceClassification` does); encoder backbones (BERT/MiniLM sentence encoders) pool the mean
of the token states, which is how sentence-transformers trained them (deviation from the paper, which only
uses decoder backbones).

On disk: the backbone as an ordinary HF safetensors directory (`save_pretrained`), its tokenizer, the head in
`reward_head.safetensors` and `evarl_reward_model.json` (format marker, pooling, hidden size). The
`classifier` reward source loads such a directory, and any `AutoModelForSequenceClassification` directory.

Device and dtype: `from_backbone` / `from_pretrained` take `device` (None = CPU, a setting or a torch.device;
`evarl.models.loading.torch_device`) and `dtype` (`auto` = bfloat16 on CUDA, else float32). The backbone is
loaded straight onto the device; the head follows it and stays float32 (the pooled state is cast to it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evarl.io import read_json

META_FILE = "evarl_reward_model.json"
HEAD_FILE = "reward_head.safetensors"
FORMAT = "evarl-scalar-reward-model"
POOLINGS = ("mean", "last", "cls")


def is_scalar_reward_model(path: str | Path) -> bool:
    return (Path(path) / META_FILE).exists()


def default_pooling(config: Any) -> str:
    """mean for encoder-only backbones, last token for decoders."""
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError("encoder-decoder backbones are not supported as reward models")
    archs = " ".join(getattr(config, "architectures", None) or []).lower()
    encoder_types = {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra",
                     "mpnet", "albert", "modernbert"}  # fmt: skip
    if getattr(config, "model_type", "") in encoder_types or "masked" in archs:
        return "mean"
    return "last"


class ScalarRewardModel(nn.Module):
    """r(x, y) = w . pool(backbone(text(x, y))) + b."""

    def __init__(self, backbone: nn.Module, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self) -> Any:
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(h.dtype)
        if self.pooling == "mean":
            pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        elif self.pooling == "cls":
            pooled = h[:, 0]
        else:  # last non-padding token; works for left and right padding
            idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            last = (idx * attention_mask).argmax(1)
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)

    @classmethod
    def from_backbone(
        cls,
        path: str,
        pooling: str | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        device: Any = None,
    ) -> ScalarRewardModel:
        from transformers import AutoModel

        from evarl.models.loading import placement_kwargs, resolve_dtype, torch_device

        backbone = AutoModel.from_pretrained(
            path,
            dtype=getattr(torch, resolve_dtype(dtype, device)),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **placement_kwargs(device),
        )
        model = cls(backbone, pooling or default_pooling(backbone.config))
        model.head.to(torch_device(device))
        return model

    def save_pretrained(self, out_dir: str | Path) -> None:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out, safe_serialization=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}, out / HEAD_FILE
        )
        meta = {"format": FORMAT, "pooling": self.pooling, "hidden_size": self.head.in_features}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        device: Any = None,
    ) -> ScalarRewardModel:
        from safetensors.torch import load_file

        p = Path(path)
        meta = read_json(p / META_FILE)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{p / META_FILE}: format {meta.get('format')!r} is not {FORMAT!r}")
        model = cls.from_backbone(str(p), meta["pooling"], dtype, trust_remote_code, device=device)
        # load_state_dict copies into the existing (already placed) head parameters
        model.head.load_state_dict(load_file(str(p / HEAD_FILE)))
        return model
