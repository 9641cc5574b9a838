"""evarl: open-ended, self-improving RL post-training of language models.

Implements eva (Evolving Alignment via Asymmetric Self-Play: a creator that estimates prompt informativeness,
samples and evolves prompts; a solver that learns from preference pairs) on top of an online iterative RLHF
workflow (RLHF Workflow; Self-learning and teacher-guided alignment).
"""

__version__ = "0.1.0"
