"""Every model on its device and dtype: device/dtype resolution, loaders placing weights at load, inputs moved
to the model's device (generator, classifier, pairwise), `build_reward` handing the device down, and ArmoRM-style
remote-code reward models (`.score` output, loaded only with `trust_remote_code`).

The machine running CI has no GPU: the CUDA branch is checked by what the loaders ask transformers for
(`device_map`), and "the model's device" by fake models that report the `meta` device and record where their
inputs arrived."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from evarl.config import RewardConfig, RewardSourceConfig
from evarl.models.loading import (
    device_of,
    load_causal_lm,
    placement_kwargs,
    resolve_dtype,
    torch_device,
)
from evarl.rewards.combine import RewardBuildError
from evarl.types import Prompt

CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's behaviour")


def _p(pid: str = "p0", text: str = "Say hi.") -> Prompt:
    return Prompt(id=pid, messages=[{"role": "user", "content": text}])


# ---------------------------------------------------------------- resolution


@no_cuda
def test_device_settings_resolve_to_the_cpu_here():
    assert torch_device(None) == CPU
    assert torch_device("cpu") == CPU
    assert torch_device("auto") == CPU
    dev = torch.device("cuda", 1)
    assert torch_device(dev) is dev  # an already resolved device is taken as is
    with pytest.raises(ValueError, match="no CUDA device"):
        torch_device("cuda")
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        torch_device("tpu")


def test_dtype_rule(monkeypatch):
    assert resolve_dtype("float32") == "float32"
    assert resolve_dtype("bfloat16", None) == "bfloat16"
    assert resolve_dtype("auto", None) == "float32"
    assert resolve_dtype("auto", CPU) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "float32"  # never fp16 by default
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8")


def test_placement_asks_for_the_device_at_load():
    assert placement_kwargs(None) == {}
    assert placement_kwargs("cpu") == {}
    cuda1 = torch.device("cuda", 1)
    assert placement_kwargs(cuda1) == {"device_map": {"": cuda1}}


def test_load_causal_lm_requests_the_device_map_on_cuda(monkeypatch):
    """No GPU here: check what the CUDA branch asks transformers for (weights straight onto the device)."""
    import transformers

    seen: dict[str, Any] = {}

    def fake_from_pretrained(path: str, **kwargs: Any) -> str:
        seen.update(kwargs, path=path)
        return "model"

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda0 = torch.device("cuda", 0)
    assert load_causal_lm("some/dir", "auto", device=cuda0) == "model"
    assert seen["device_map"] == {"": cuda0} and seen["dtype"] is torch.bfloat16
    seen.clear()
    load_causal_lm("some/dir", "float32", device=cuda0)
    assert seen["dtype"] is torch.float32  # an explicit dtype wins over the auto rule
    seen.clear()
    load_causal_lm("some/dir")
    assert "device_map" not in seen and seen["dtype"] is torch.float32  # CPU: exactly the old call


# ---------------------------------------------------------------- real models on the resolved device


def _all_on(model: Any, device: torch.device) -> bool:
    return all(p.device == device for p in model.parameters())


def test_causal_lm_and_generator_land_on_the_resolved_device(tiny_model_dir: Path):
    from evarl.dist import resolve_device
    from evarl.generation.hf import HFGenerator

    want = resolve_device("auto")
    m = load_causal_lm(str(tiny_model_dir), device="auto")
    assert device_of(m) == want and _all_on(m, want)
    m = load_causal_lm(str(tiny_model_dir), device=CPU)
    assert device_of(m) == CPU and _all_on(m, CPU)
    gen = HFGenerator.from_path(str(tiny_model_dir), batch_size=4, device="cpu")
    assert device_of(gen.model) == CPU and _all_on(gen.model, CPU)


@no_cuda
def test_cuda_setting_without_cuda_is_a_clear_error(tiny_model_dir: Path):
    from evarl.generation.hf import HFGenerator
    from evarl.rewards import build_reward

    with pytest.raises(ValueError, match="'cuda' was asked for but this machine has no CUDA device"):
        load_causal_lm(str(tiny_model_dir), device="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        HFGenerator.from_path(str(tiny_model_dir), device="cuda:0")
    with pytest.raises(ValueError, match="no CUDA device"):  # before any reward model is loaded
        build_reward(RewardConfig(sources=[RewardSourceConfig(name="length")]), device="cuda")


def test_scalar_reward_model_on_the_device(tmp_path: Path, tiny_model_dir: Path):
    from evarl.models.scalar_rm import ScalarRewardModel

    rm = ScalarRewardModel.from_backbone(str(tiny_model_dir), device="cpu")
    rm.save_pretrained(tmp_path / "rm")
    again = ScalarRewardModel.from_pretrained(tmp_path / "rm", device=CPU)
    assert _all_on(again, CPU) and again.head.weight.dtype == torch.float32
    assert torch.equal(again.head.weight, rm.head.weight)


# ---------------------------------------------------------------- inputs follow the model's device


class _MetaModel(torch.nn.Module):
    """Reports the `meta` device (where its inputs must arrive) and computes on CPU copies."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"pad_token_id": 0})()
        self.seen: list[torch.device] = []

    @property
    def device(self) -> torch.device:
        return torch.device("meta")


class _MetaGenerator(_MetaModel):
    generation_config = None

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> torch.Tensor:
        self.seen += [input_ids.device, attention_mask.device]
        n = kw["num_return_sequences"]
        b, t = input_ids.shape
        # prompt (placeholder) then "hi" tokens and EOS
        return torch.tensor([[0] * t + [28, 2, 5]] * (b * n))


def test_generator_moves_inputs_to_the_models_device(smollm2_dir: Path):
    from evarl.generation.base import SamplingParams
    from evarl.generation.hf import HFGenerator
    from evarl.models.loading import load_tokenizer

    model = _MetaGenerator()
    gen = HFGenerator(model, load_tokenizer(str(smollm2_dir)), batch_size=4)
    out = gen.generate([[{"role": "user", "content": "hi"}]] * 3, SamplingParams(n=2, seed=1))
    assert model.seen and all(d.type == "meta" for d in model.seen)
    assert [[o.finish_reason for o in row] for row in out] == [["stop", "stop"]] * 3
    assert all(o.num_tokens == 1 for row in out for o in row)


class _ArmoStyleOutput(dict):
    """A ModelOutput-like object with `.score` (ArmoRM's CustomOutput) and a different `.logits`."""

    def __init__(self, score: torch.Tensor) -> None:
        super().__init__(score=score, logits=score + 1000.0)
        self.score = score
        self.logits = score + 1000.0


class _MetaArmo(_MetaModel):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _ArmoStyleOutput:
        self.seen += [input_ids.device, attention_mask.device]
        n = attention_mask.shape[1]  # a shape: usable on the meta device
        return _ArmoStyleOutput(torch.full((input_ids.shape[0], 1), float(n)))


def test_classifier_reads_score_and_sends_inputs_to_the_models_device(smollm2_dir: Path):
    from evarl.models.loading import load_tokenizer
    from evarl.rewards.classifier import ClassifierReward

    model = _MetaArmo()
    rm = ClassifierReward(model, load_tokenizer(str(smollm2_dir)), batch_size=1)  # score = own width
    out = rm.score([_p(), _p(), _p()], ["a", "a b c d e", "a b"])
    assert model.seen and all(d.type == "meta" for d in model.seen)
    scores = [r.score for r in out]
    assert all(s < 1000 for s in scores)  # from `.score`, not `.logits`
    assert scores[1] > scores[2] > scores[0]  # longer input, higher fake score: rows map back correctly


class _MetaPreference(_MetaModel):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.seen += [input_ids.device, attention_mask.device]
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 49152)
        return type("Out", (), {"logits": logits})()


def test_pairwise_sends_inputs_to_the_models_device(smollm2_dir: Path):
    from evarl.models.loading import load_tokenizer
    from evarl.rewards.pairwise import PairwiseReward

    model = _MetaPreference()
    pm = PairwiseReward(model, load_tokenizer(str(smollm2_dir)), batch_size=4)
    out = pm.score([_p(), _p()], ["one", "two"])
    assert model.seen and all(d.type == "meta" for d in model.seen)
    assert [r.score for r in out] == [0.5, 0.5]


# ---------------------------------------------------------------- build_reward hands the device down


def test_build_reward_passes_the_device_to_factories_that_take_it():
    from evarl.registry import REWARDS
    from evarl.rewards import build_reward

    seen: dict[str, Any] = {}

    class WithDevice:
        name = "with_device"

        @classmethod
        def from_config(cls, cfg, *, policy=None, policy_tokenizer=None, device=None):
            seen["device"] = device
            return cls()

        def score(self, prompts, responses):
            return []

    class WithoutDevice(WithDevice):
        name = "without_device"

        @classmethod
        def from_config(cls, cfg, *, policy=None, policy_tokenizer=None):  # a plug-in from before devices
            seen["old"] = True
            return cls()

    for cls in (WithDevice, WithoutDevice):
        if cls.name not in REWARDS:
            REWARDS.register(cls.name)(cls)
    both = [RewardSourceConfig(name="with_device"), RewardSourceConfig(name="without_device")]
    build_reward(RewardConfig(sources=both), device="cpu")
    assert seen == {"device": CPU, "old": True}
    seen.clear()
    build_reward(RewardConfig(sources=[RewardSourceConfig(name="with_device")]))
    assert seen == {"device": None}  # None = the CPU, as before devices existed


def test_classifier_from_config_on_the_device(tmp_path: Path, tiny_model_dir: Path):
    from transformers import AutoModelForSequenceClassification

    from evarl.models.loading import load_tokenizer
    from evarl.rewards import build_reward

    rm_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1).save_pretrained(
        rm_dir
    )
    load_tokenizer(str(tiny_model_dir)).save_pretrained(rm_dir)
    cfg = RewardConfig(sources=[RewardSourceConfig(name="classifier", model=str(rm_dir))])
    comb = build_reward(cfg, device="auto")
    src = comb.sources[0][2]
    assert device_of(src.model) == torch_device("auto")
    assert next(src.model.parameters()).dtype == getattr(torch, resolve_dtype("auto", torch_device("auto")))
    bad = RewardSourceConfig(name="classifier", model=str(rm_dir), options={"dtype": "int8"})
    with pytest.raises(RewardBuildError, match="dtype must be one of"):
        build_reward(RewardConfig(sources=[bad]))


# ---------------------------------------------------------------- ArmoRM-style remote code

MODELING = textwrap.dedent('''
    """A tiny ArmoRM-style reward model: remote code whose output has `.score` (and a different `.logits`)."""
    from dataclasses import dataclass
    from typing import Optional

    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.utils import ModelOutput


    class TinyArmoConfig(PretrainedConfig):
        model_type = "evarl_tiny_armo"

        def __init__(self, vocab_size=49160, hidden_size=8, num_objectives=3, **kwargs):
            self.vocab_size = vocab_size
            self.hidden_size = hidden_size
            self.num_objectives = num_objectives
            super().__init__(**kwargs)


    @dataclass
    class CustomOutput(ModelOutput):
        rewards: Optional[torch.FloatTensor] = None
        score: Optional[torch.FloatTensor] = None
        logits: Optional[torch.FloatTensor] = None


    class TinyArmoForRewardModel(PreTrainedModel):
        config_class = TinyArmoConfig

        def __init__(self, config):
            super().__init__(config)
            self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
            self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
            self.gate = nn.Parameter(torch.tensor([0.5, 0.3, 0.2]))
            self.post_init()

        def _init_weights(self, module):
            pass

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            h = self.embed(input_ids)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            rewards = self.regression_layer((h * m).sum(1) / m.sum(1).clamp(min=1.0))
            score = (rewards * self.gate).sum(1, keepdim=True)
            # ArmoRM sets logits = score; here they differ so that the test sees which one is read
            return CustomOutput(rewards=rewards, score=score, logits=score + 1000.0)
''')


@pytest.fixture(scope="module")
def armo_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A local remote-code model directory: modeling file + `auto_map` in config.json, SmolLM2's tokenizer."""
    import importlib.util

    from evarl.models.loading import load_tokenizer

    d = tmp_path_factory.mktemp("armo") / "tiny-armo"
    d.mkdir()
    (d / "modeling_tiny_armo.py").write_text(MODELING)
    spec = importlib.util.spec_from_file_location("evarl_test_tiny_armo", d / "modeling_tiny_armo.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while building the output class
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    mod.TinyArmoForRewardModel(mod.TinyArmoConfig()).save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "modeling_tiny_armo.TinyArmoConfig",
        "AutoModelForSequenceClassification": "modeling_tiny_armo.TinyArmoForRewardModel",
    }
    (d / "config.json").write_text(json.dumps(cfg))
    load_tokenizer(str(smollm2_dir)).save_pretrained(d)
    return d


def _armo_cfg(path: Path, trust: bool | None, via_option: bool = False) -> RewardSourceConfig:
    opts: dict[str, Any] = {"batch_size": 2}
    if via_option and trust is not None:
        opts["trust_remote_code"] = trust
    cfg = RewardSourceConfig(name="classifier", model=str(path), options=opts)
    if not via_option and trust is not None:
        # the `trust_remote_code` field of RewardSourceConfig; set as an attribute so that this test runs both
        # before and after the field exists
        cfg.trust_remote_code = trust  # type: ignore[attr-defined]
    return cfg


def test_remote_code_reward_model_is_refused_without_trust(armo_dir: Path):
    from evarl.rewards.classifier import ClassifierReward

    for cfg in (_armo_cfg(armo_dir, None), _armo_cfg(armo_dir, False)):
        with pytest.raises(RewardBuildError, match=r"own modeling code.*trust_remote_code: true"):
            ClassifierReward.from_config(cfg, device="cpu")


@pytest.mark.parametrize("via_option", [False, True])
def test_armorm_style_score_is_read(armo_dir: Path, via_option: bool):
    from evarl.rewards.classifier import ClassifierReward, rm_text

    src = ClassifierReward.from_config(_armo_cfg(armo_dir, True, via_option), device=CPU)
    assert device_of(src.model) == CPU
    prompts = [_p("a", "Name a colour."), _p("b", "Say hi.")]
    responses = ["Blue, like the sea on a clear day.", "Hi!"]
    got = [r.score for r in src.score(prompts, responses)]
    want = []
    for p, r in zip(prompts, responses):
        text, special = rm_text(src.tokenizer, p.messages, r)
        enc = src.tokenizer(text, add_special_tokens=special, return_tensors="pt")
        with torch.no_grad():
            out = src.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        want.append(float(out.score[0, 0]))
    assert got == pytest.approx(want, abs=1e-5)
    assert all(abs(g) < 100 for g in got)  # `.score`, not the +1000 `.logits`
