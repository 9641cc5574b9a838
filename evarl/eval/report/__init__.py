"""Run reports: a Markdown summary per round, and one self-contained HTML page (+ Markdown) for one or more
runs, built only from the plain files in the run directories.

What the report shows is what eva (Ye et al., 2024, arXiv:2410.23563) uses as evidence that self-play works:

- held-out scores per round with round 0 = the base policy θ_0 (Tables 1-2; Figure 5's monotonic gains);
- reward distributions (held-out and training prompts) and the reward-length correlation (RLHF Workflow, Dong
  et al., 2024, arXiv:2405.07863, Figure 3);
- informativeness distributions per round (appendix D, Figure 9);
- prompt complexity and quality per round when `prompt_scores.jsonl` exists (appendix E, Table 7);
- the curriculum: category mix of the training prompts per round (§4.2.5, Figure 6) and the evolve-method mix;
- the solver's training curves (loss, reward margin, reward accuracy);
- for several runs, one comparison table in the form of the paper's ablation tables (Tables 4-6): a row per
  run, held-out metrics plus the config fields that differ between the runs.

A report is never the thing that crashes: missing rounds, files or fields (a run still in progress, a killed
one) are skipped and listed as notes at the top of the page. Plots are written as PNG files under
`<out>/plots/` and embedded in the HTML as base64, so the page opens anywhere with no other file.

Parts, each importing only the ones before it:

- `load`: run directories, manifests, round files and eval files into `RunData` / `RoundData`;
- `tables`: per-round numbers and the tables (`Table`, Markdown or HTML);
- `figures`: matplotlib figures and the figure sets of a run and of a comparison;
- `render`: `write_round_markdown` and `build_report` (Markdown, HTML, PNG files, `report.json`).
"""

from __future__ import annotations

from evarl.eval.report.load import RoundData, RunData, load_run
from evarl.eval.report.render import build_report, write_round_markdown
from evarl.eval.report.tables import (
    Table,
    comparison_table,
    differing_config,
    heldout_table,
    round_summary,
    rounds_table,
    timings_table,
)

__all__ = [
    "RoundData",
    "RunData",
    "Table",
    "build_report",
    "comparison_table",
    "differing_config",
    "heldout_table",
    "load_run",
    "round_summary",
    "rounds_table",
    "timings_table",
    "write_round_markdown",
]
