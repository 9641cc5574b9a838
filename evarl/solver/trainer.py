"""The offline solver trainer: preference optimisation (DPO / IPO / SPPO / SimPO / ORPO / DPO+NLL ...) on the
training engine (:mod:`evarl.engine`); eva's solver step (Ye et al., 2024, "Evolving Alignment via Asymmetric
Self-Play", arXiv:2411.00062, §3.3 "optimization") and the iterative DPO of RLHF Workflow (Dong et al., 2024,
arXiv:2405.07863, §3.3).

This module keeps only what is particular to preference pairs: the policy model setup (dtype, gradient
checkpointing, LoRA), the pair batches (chosen and rejected in one forward, the prompt shared through the KV
cache when the model allows), and the loss call. Everything else (optimizer, schedule, global batch, data order,
accumulation, clipping, mixed precision, logging, checkpoints and exact resume, the final save through
``accelerator.get_state_dict``) is the engine's, shared with SFT, online training and the reward models.

The reference model is never loaded here: its log-probs come precomputed (``ref_logps``, from
:func:`evarl.solver.logprobs.compute_reference_logps`), and reference-free losses (SimPO, ORPO) need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from evarl.engine import (
    FAIL_ENV,
    SUMMARY_FILE,
    SimulatedKill,
    TrainSettings,
    content_hash,
    epoch_plan,
    fit,
    lr_multiplier,
    model_is_complete,
    save_hf_model,
)
from evarl.io import read_json, write_json
from evarl.solver.logprobs import (
    collate_pairs,
    collate_pairs_shared,
    encode_pairs,
    pair_logps,
    supports_prompt_sharing,
)
from evarl.solver.losses import LossInputs, get_loss
from evarl.types import Pair

__all__ = [
    "FAIL_ENV",
    "SUMMARY_FILE",
    "SimulatedKill",
    "build_policy",
    "epoch_plan",
    "lr_multiplier",
    "model_is_complete",
    "save_policy",
    "train_preference",
]

_PARAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_policy(model_path: str, cfg: Any, trust_remote_code: bool = False) -> Any:
    """The trainable policy: weights in ``cfg.param_dtype`` (float32 master weights unless bfloat16), optional
    gradient checkpointing and a PEFT LoRA adapter (``cfg.lora``). Placed on a device by the engine."""
    from transformers import AutoModelForCausalLM

    dtype_name = getattr(cfg, "param_dtype", "float32")
    if dtype_name not in _PARAM_DTYPES:
        raise ValueError(f"solver.param_dtype: must be float32 or bfloat16, got {dtype_name!r}")
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=_PARAM_DTYPES[dtype_name], use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lc = cfg.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lc.r,
                lora_alpha=lc.alpha,
                lora_dropout=lc.dropout,
                target_modules=list(lc.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def save_policy(tokenizer: Any, adapter_dir: Path | None = None) -> Any:
    """The engine's save function for a causal-LM policy: merged HF model + tokenizer + the summary (and the
    unmerged LoRA adapter in ``adapter_dir`` when given)."""

    def save(model: Any, state_dict: Any, out: Path, summary: dict[str, Any]) -> None:
        save_hf_model(model, state_dict, out, tokenizer, adapter_dir)
        write_json(out / SUMMARY_FILE, summary)

    return save


def train_policy(
    *,
    kind: str,
    model_path: str,
    tokenizer: Any,
    lengths: list[int],
    batch_fn: Any,
    step_fn: Any,
    cfg: Any,
    out_dir: Path,
    seed: int,
    progress: bool,
    data_hash: str,
    summary_extra: dict[str, Any],
    device: Any = None,
) -> dict[str, Any]:
    """A causal-LM policy trained by the engine on a fixed dataset (preference pairs or SFT examples)."""
    return fit(
        kind=kind,
        settings=TrainSettings.from_config(cfg),
        build_model=lambda: (build_policy(model_path, cfg), None),
        lengths=lengths,
        batch_fn=batch_fn,
        step_fn=step_fn,
        save_fn=save_policy(tokenizer, _adapter_dir(cfg, Path(out_dir))),
        out_dir=Path(out_dir),
        seed=seed,
        progress=progress,
        fingerprint={"model": str(model_path), "cfg": _solver_fields(cfg), "data": data_hash},
        summary_extra=summary_extra,
        device=device,
    )


def _adapter_dir(cfg: Any, out_dir: Path) -> Path | None:
    """``out_dir/adapter`` (next to ``out_dir/model``) when ``solver.lora.save_adapter`` asks for the adapter."""
    lora = getattr(cfg, "lora", None)
    return (
        out_dir / "adapter"
        if lora is not None and lora.enabled and getattr(lora, "save_adapter", False)
        else None
    )


def _solver_fields(cfg: Any) -> dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    return {
        k: v
        for k, v in d.items()
        if k not in ("save_every", "log_to", "grad_accum", "global_batch_size", "preset")
    }


# ---------------------------------------------------------------- preference training


def _aligned_ref(pairs: Sequence[Pair], ref_logps: list[dict]) -> tuple[list[float], list[float]]:
    rows = ref_logps
    if rows and all("pair_index" in r for r in rows):
        rows = sorted(rows, key=lambda r: r["pair_index"])
    if len(rows) != len(pairs):
        raise ValueError(
            f"ref_logps: {len(rows)} rows for {len(pairs)} pairs (recompute the reference log-probs)"
        )
    for i, (p, r) in enumerate(zip(pairs, rows)):
        if r.get("prompt_id") != p.prompt_id:
            raise ValueError(
                f"ref_logps row {i}: prompt_id {r.get('prompt_id')!r} does not match pair {p.prompt_id!r}"
            )
    return [float(r["chosen_logp"]) for r in rows], [float(r["rejected_logp"]) for r in rows]


def train_preference(
    model_path: str,
    pairs: list[Pair],
    ref_logps: list[dict] | None,
    cfg: Any,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    device: Any = None,
) -> dict[str, Any]:
    """Train the policy at ``model_path`` on ``pairs`` with loss ``cfg.loss``; save to ``out_dir/model``.

    ``ref_logps`` (rows of :func:`~evarl.solver.logprobs.compute_reference_logps`, same order as ``pairs``) is
    required when the loss needs a reference and ignored otherwise. Returns the summary (also saved as
    ``out_dir/model/evarl_train_summary.json``): steps, final/mean loss, reward margin and accuracy, seconds.
    """
    from evarl.models.loading import load_tokenizer

    done = Path(out_dir) / "model"
    if model_is_complete(done):  # a finished stage: nothing to tokenise or train
        return read_json(done / SUMMARY_FILE)
    loss_fn = get_loss(cfg.loss)
    need_ref = bool(getattr(loss_fn, "needs_reference", True))
    if need_ref and ref_logps is None:
        raise ValueError(f"solver.loss={cfg.loss!r} needs reference log-probs; pass ref_logps")
    if need_ref and ref_logps is not None:
        ref_c, ref_r = _aligned_ref(pairs, ref_logps)
    else:
        ref_c = ref_r = None
    tokenizer = load_tokenizer(model_path)
    enc = encode_pairs(tokenizer, pairs, cfg.max_prompt_length, cfg.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    win_c = [p.meta.get("chosen_win_prob") for p in pairs]
    win_r = [p.meta.get("rejected_win_prob") for p in pairs]
    # SPPO: a pair without preference-model probabilities gets the hard ones (1 for y+, 0 for y-)
    has_win = any(w is not None for w in win_c + win_r)
    win_c = [1.0 if w is None else float(w) for w in win_c]
    win_r = [0.0 if w is None else float(w) for w in win_r]

    share: dict[str, bool] = {}

    def batch_fn(idx: list[int], model: Any, epoch: int) -> dict[str, torch.Tensor]:
        if "on" not in share:  # decided once, on the first batch, for the prepared model
            share["on"] = bool(getattr(cfg, "share_prompt", True)) and supports_prompt_sharing(model)
        b = (collate_pairs_shared if share["on"] else collate_pairs)([enc[i] for i in idx], pad)
        if ref_c is not None:
            b["ref_chosen"] = torch.tensor([ref_c[i] for i in idx], dtype=torch.float32)
            b["ref_rejected"] = torch.tensor([ref_r[i] for i in idx], dtype=torch.float32)
        if has_win:
            b["win_chosen"] = torch.tensor([win_c[i] for i in idx], dtype=torch.float32)
            b["win_rejected"] = torch.tensor([win_r[i] for i in idx], dtype=torch.float32)
        return b

    def step_fn(model: Any, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pc, pr, lc, lr = pair_logps(model, b)
        inp = LossInputs(
            policy_chosen_logps=pc.float(),
            policy_rejected_logps=pr.float(),
            chosen_lengths=lc,
            rejected_lengths=lr,
            ref_chosen_logps=b.get("ref_chosen"),
            ref_rejected_logps=b.get("ref_rejected"),
            chosen_win_prob=b.get("win_chosen"),
            rejected_win_prob=b.get("win_rejected"),
        )
        return loss_fn(inp, cfg)

    data_hash = content_hash(
        [[e.prompt_ids, e.chosen_ids, e.rejected_ids] for e in enc]
        + [ref_c, ref_r, win_c if has_win else None, win_r if has_win else None]
    )
    return train_policy(
        kind="preference",
        model_path=model_path,
        tokenizer=tokenizer,
        lengths=[e.length for e in enc],
        batch_fn=batch_fn,
        step_fn=step_fn,
        cfg=cfg,
        out_dir=Path(out_dir),
        seed=seed,
        progress=progress,
        data_hash=data_hash,
        summary_extra={"loss": cfg.loss, "pairs": len(pairs), "tokens": sum(e.length for e in enc)},
        device=device,
    )
