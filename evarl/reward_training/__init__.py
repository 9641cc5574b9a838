"""Reward-model training: Bradley-Terry scalar RMs (`train_bt`) and pairwise A/B preference models
(`train_pairwise`) on TRL-format preference JSONL (seed 003_62f5fe925a407d7a.txt, section 2.1)."""

from evarl.reward_training.bt import train_bt
from evarl.reward_training.cli import add_subcommands, evaluate_reward_model
from evarl.reward_training.data import PreferenceDataError, PreferenceRow, load_preferences, write_preferences
from evarl.reward_training.pairwise_train import train_pairwise

__all__ = [
    "PreferenceDataError",
    "PreferenceRow",
    "add_subcommands",
    "evaluate_reward_model",
    "load_preferences",
    "train_bt",
    "train_pairwise",
    "write_preferences",
]
