"""The solver step: pairs, reference log-probs, preference losses and the offline trainer (seed 001 §3.3.1).

Entry points the loop calls (heavy imports stay inside the submodules):

- :func:`evarl.solver.pairs.build_pairs`, :func:`evarl.solver.pairs.teacher_demo_pairs`
- :func:`evarl.solver.rewrite.rewrite_chosen` (H.2.1 rewriter)
- :func:`evarl.solver.logprobs.compute_reference_logps`
- :func:`evarl.solver.trainer.train_preference`, :func:`evarl.solver.sft.train_sft`
- :func:`evarl.solver.presets.apply_preset`, :func:`evarl.solver.losses.needs_reference`

See docs/solver.md for the flow and how to add a loss.
"""
