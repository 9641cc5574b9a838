"""The shipped configs stay true: the default file is the built-in default, every run config parses, and every
accelerate launch config loads with accelerate's own loader and names only options `accelerate launch` knows."""

from dataclasses import asdict
from pathlib import Path

import pytest

from evarl.config import RunConfig, load_config

ROOT = Path(__file__).parents[2] / "configs"
ACCELERATE = sorted((ROOT / "accelerate").glob("*.yaml"))
# run configs: everything but the accelerate launch configs and the `evarl ablate` study files
CONFIGS = sorted(
    p for p in ROOT.rglob("*.yaml") if not {"accelerate", "ablation"} & set(p.relative_to(ROOT).parts)
)
STUDIES = sorted((ROOT / "ablation").glob("*.yaml"))


def test_default_yaml_is_the_builtin_default() -> None:
    assert asdict(load_config(ROOT / "default.yaml")) == asdict(RunConfig())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_parses(path: Path) -> None:
    load_config(path)  # structural errors raise; paper recipes name models/files that need GPUs and data


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_ablation_study_parses(path: Path) -> None:
    from evarl.ablate import arm_config, load_study

    study = load_study(path)
    for arm in study.arms:  # every arm's run config builds
        arm_config(study, arm, study.seeds[0])


def test_the_accelerate_configs_are_shipped() -> None:
    assert [p.name for p in ACCELERATE] == [
        "ddp.yaml",
        "fsdp.yaml",
        "zero2.yaml",
        "zero3-offload.yaml",
        "zero3.yaml",
    ]


def _launch_args(path: Path):  # noqa: ANN202 - argparse.Namespace
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "evarl.cli", "run", "x.yaml"]
    )
    args, _, _ = _validate_launch_command(args)
    return args


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_config_loads_with_accelerates_loader(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    cfg = load_config_from_file(str(path))  # unknown top-level keys raise here
    assert isinstance(cfg, ClusterConfig)
    assert (cfg.num_machines, cfg.num_processes, cfg.mixed_precision) == (1, 8, "bf16")
    assert "overridden by `accelerate launch --num_processes N`" in path.read_text()
    # nested keys become `accelerate launch` options (fsdp_config.x -> --fsdp_x); a typo would be ignored silently
    known = {a.dest for a in launch_command_parser()._actions}
    nested = [*cfg.deepspeed_config, *cfg.fsdp_config]
    assert all(k in known for k in nested), sorted(set(nested) - known)
    assert bool(nested) == (cfg.distributed_type.value != "MULTI_GPU")  # DDP needs no nested options
    args = _launch_args(path)
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    # a value here would override the grad_accum evarl derives from solver.global_batch_size
    assert "gradient_accumulation_steps" not in cfg.deepspeed_config


def test_fsdp_config_is_full_shard_with_a_full_state_dict() -> None:
    from accelerate.utils.launch import prepare_multi_gpu_env

    env = prepare_multi_gpu_env(_launch_args(ROOT / "accelerate" / "fsdp.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"  # reference / reward models load on every rank


@pytest.mark.parametrize(
    ("name", "stage", "offload"),
    [("zero2.yaml", 2, "none"), ("zero3.yaml", 3, "none"), ("zero3-offload.yaml", 3, "cpu")],
)
def test_deepspeed_configs(name: str, stage: int, offload: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    ds = load_config_from_file(str(ROOT / "accelerate" / name)).deepspeed_config
    assert ds["zero_stage"] == stage
    assert (ds["offload_param_device"], ds["offload_optimizer_device"]) == (offload, offload)
    if stage == 3:
        assert ds["zero3_save_16bit_model"] is True  # accelerator.get_state_dict gathers the full weights
        assert ds["zero3_init_flag"] is False  # reference / reward models are loaded outside DeepSpeed
