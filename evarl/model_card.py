"""Models out: a run's final model folder with its model card, and its upload to the Hugging Face Hub.

When a run finishes, :func:`finish_model` writes ``<run>/model/``: the last trained model (the last trained
round's ``round-00T/train/model/``, or ``online/model/``; its files hard-linked, so it costs no disk space) plus
``README.md``, a Hugging Face model card with YAML metadata (``library_name``, ``base_model`` when the base is a
hub model, ``tags``) and

* the base model, the algorithm (offline eva rounds or online), the solver recipe (loss, preset, beta, reference,
  pair rule, optimiser settings, LoRA) and the reward sources;
* the data lineage: per round the prompt set the solver trained on, how many prompts were evolved, the number
  of preference pairs, and the files in the run directory they came from;
* held-out numbers where the run has them (``round-00t/eval.json``, round 0 = the base model): mean reward and
  IFEval prompt-level strict / loose accuracy, each with its n and the 95% bootstrap interval over prompts the
  evaluation stage stored (:func:`evarl.eval.stats.mean_interval`; recomputed from ``eval_generations.jsonl``
  for runs whose eval.json predates stored intervals).

The round folders are never written to after their stage finished (the manifest records their digests). The
card is a pure function of the run's files and config (no dates, no run name or directory), so a resumed run
writes the same bytes. With ``solver.lora.save_adapter`` the last round's unmerged adapter is linked into
``<run>/adapter/``. With ``model.push_to_hub: <repo id>`` the folder (and the adapter, as ``adapter/``) is
uploaded with ``huggingface_hub.HfApi`` (``create_repo`` + ``upload_folder``); ``model.hub_private`` makes a
new repo private.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evarl.config import RunConfig
from evarl.errors import UploadError
from evarl.eval.stats import fmt_interval, mean_interval
from evarl.io import iter_jsonl, read_json
from evarl.runs import Run

CARD_FILE = "README.md"
FINAL_DIR = "model"  # <run>/model/: the final model folder
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------- numbers with n and intervals


def _count_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    return sum(1 for _ in iter_jsonl(path))


def _from_generations(gens: Path) -> dict[str, dict[str, Any]]:
    """Intervals over prompts from ``eval_generations.jsonl`` (eval.json files written before evarl stored its
    intervals): per prompt the mean over its samples, then :func:`mean_interval` over the prompts."""
    by: dict[str, dict[str, list[float]]] = {}
    for _, row in iter_jsonl(gens):
        d = by.setdefault(str(row.get("prompt_id")), {"reward": [], "prompt_strict": [], "prompt_loose": []})
        r = row.get("reward")
        if not row.get("failed") and isinstance(r, int | float):
            d["reward"].append(float(r))
        checks = row.get("ifeval") or []
        if checks:
            d["prompt_strict"].append(float(all(c.get("strict") for c in checks)))
            d["prompt_loose"].append(float(all(c.get("loose") for c in checks)))
    out = {}
    for key, name in (
        ("reward", "mean_reward"),
        ("prompt_strict", "prompt_strict"),
        ("prompt_loose", "prompt_loose"),
    ):
        per_prompt = [sum(v[key]) / len(v[key]) for v in by.values() if v[key]]
        if per_prompt:
            out[name] = mean_interval(per_prompt)
    return out


def heldout_numbers(round_dir: Path) -> dict[str, Any] | None:
    """Mean reward and IFEval prompt-level strict / loose accuracy of one evaluated round, each a
    ``{"mean", "lo", "hi", "n"}`` dict (95% bootstrap interval over prompts), as the evaluation stage stored them
    in ``eval.json`` (or recomputed from ``eval_generations.jsonl`` for older runs); None when the round was not
    evaluated."""
    ev, gens = round_dir / "eval.json", round_dir / "eval_generations.jsonl"
    if not ev.exists():
        return None
    h = read_json(ev).get("heldout") or {}
    intervals = h.get("intervals") or (_from_generations(gens) if gens.exists() else {})
    return {
        "reward": intervals.get("mean_reward"),
        "failed": h.get("failed"),
        "prompt_strict": intervals.get("prompt_strict"),
        "prompt_loose": intervals.get("prompt_loose"),
        "benchmark": (h.get("ifeval") or {}).get("benchmark") or "IFEval",
    }


# ---------------------------------------------------------------- the card


def base_model_id(path: str) -> str | None:
    """The hub id of the base model for the card's metadata, when it has one."""
    if path == "embedded":
        return EMBEDDED_HUB_ID
    if HUB_ID.match(path) and not Path(path).expanduser().exists():
        return path
    return None


def _round_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in run_dir.glob("round-*"):
        m = re.fullmatch(r"round-(\d+)", p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _recipe(cfg: RunConfig) -> list[str]:
    s = cfg.solver
    lines = [f"- algorithm: {cfg.algorithm}"]
    if cfg.algorithm == "online":
        o = cfg.online
        lines.append(
            f"- online solver: {o.solver}, {o.steps} steps of {o.batch_prompts} prompts, learning rate "
            f"{o.learning_rate}, KL coefficient {o.kl_coef}"
        )
    else:
        lines.append(f"- rounds: {cfg.rounds}")
        lines.append(
            f"- solver loss: {s.loss}" + (f" (preset {s.preset})" if s.preset else "") + f", beta {s.beta}, "
            f"reference {s.reference}, pair rule {s.pair_rule}, min margin {s.min_margin}"
        )
        lines.append(
            f"- optimiser: {s.optimizer}, learning rate {s.learning_rate}, {s.scheduler} schedule, "
            f"{s.epochs} epochs per round, batch {s.global_batch_size or s.batch_size * s.grad_accum} pairs"
        )
    if s.lora.enabled:
        lines.append(
            f"- LoRA: r {s.lora.r}, alpha {s.lora.alpha}, modules {', '.join(s.lora.target_modules)} "
            "(merged into these weights)"
        )
    g = cfg.generation
    lines.append(f"- sampling: {g.n} responses per prompt, temperature {g.temperature}, top-p {g.top_p}")
    srcs = ", ".join(
        x.name + (f" ({x.model})" if x.model else "") + (f" x{x.weight}" if x.weight != 1.0 else "")
        for x in cfg.reward.sources
    )
    lines.append(
        f"- reward: {srcs}"
        + (f", length penalty {cfg.reward.length_penalty}" if cfg.reward.length_penalty else "")
    )
    c = cfg.creator
    if c.enabled:
        lines.append(
            f"- creator: metric {c.metric}, sampler {c.sampler} ({c.sample_fraction:g} of the prompts), evolve "
            f"methods {', '.join(c.methods)}, mix ratio {c.mix_ratio}, mode {c.mode}"
        )
    else:
        lines.append("- creator: off (the solver trains on the seed prompts each round)")
    t = cfg.task
    task = f"file {t.train_file}" if t.name == "file" else f"{t.name} ({t.train_prompts} seed prompts)"
    lines.append(f"- seed prompts: {task}")
    if cfg.model.chat_template:
        lines.append("- chat template: set by model.chat_template (saved in this folder)")
    return lines


def _lineage(run_dir: Path, final_round: int | None) -> list[str]:
    rows = []
    for t, rd in _round_dirs(run_dir):
        if t == 0 or (final_round is not None and t > final_round):
            continue
        prompts = _count_rows(rd / "train_prompts.jsonl")
        evolved = _count_rows(rd / "evolved.jsonl")
        pairs = _count_rows(rd / "pairs.jsonl")
        if prompts is None and pairs is None:
            continue
        files = ", ".join(
            f"`{rd.name}/{f}`" for f in ("train_prompts.jsonl", "pairs.jsonl") if (rd / f).exists()
        )
        rows.append(
            f"| {t} | {'-' if prompts is None else prompts} | {'-' if evolved is None else evolved} | "
            f"{'-' if pairs is None else pairs} | {files} |"
        )
    if not rows:
        return []
    return [
        "| round | prompts trained on | evolved prompts | preference pairs | files in the run directory |",
        "|---|---|---|---|---|",
        *rows,
    ]


def _evaluation(run_dir: Path, rounds: list[tuple[str, Path]]) -> list[str]:
    rows = []
    bench = "IFEval"
    for label, rd in rounds:
        h = heldout_numbers(rd)
        if h is None:
            continue
        bench = h["benchmark"]
        rows.append(
            f"| {label} | {fmt_interval(h['reward'])} | {'-' if h['failed'] is None else h['failed']} | "
            f"{fmt_interval(h['prompt_strict'])} | {fmt_interval(h['prompt_loose'])} |"
        )
    if not rows:
        return []
    return [
        f"| model | mean reward [95% CI] | failed | {bench} prompt-strict [95% CI] | {bench} prompt-loose [95% CI] |",
        "|---|---|---|---|---|",
        *rows,
    ]


def model_card_text(
    run_dir: Path, cfg: RunConfig, final_round: int | None = None, has_adapter: bool = False
) -> str:
    """The README.md of the final model: for an offline run the rounds up to `final_round` (default all), for
    an online run its final evaluation (`online/eval.json`)."""
    run_dir = Path(run_dir)
    base = cfg.model.path
    hub_base = base_model_id(base)
    tags = ["evarl", "eva", cfg.online.solver if cfg.algorithm == "online" else cfg.solver.loss]
    meta = ["---", "library_name: transformers"]
    if hub_base:
        meta.append(f"base_model: {hub_base}")
    meta += ["tags:", *[f"- {t}" for t in dict.fromkeys(tags)], "---"]
    what = "online eva" if cfg.algorithm == "online" else f"{cfg.rounds} round(s) of offline eva"
    lines = [
        *meta,
        "",
        f"# {hub_base or Path(base).name or base}, trained with evarl",
        "",
        f"This model is {hub_base or base} after {what} (eva: a creator evolves the prompt set, a solver trains "
        "on preference pairs from its own responses; Ye et al., 2024, arXiv:2411.00062). evarl wrote this card "
        "when the run finished.",
        "",
        "## Base model",
        "",
        f"- `{base}`" + (f" ({EMBEDDED_HUB_ID}, evarl's embedded copy)" if base == "embedded" else ""),
        "",
        "## Recipe",
        "",
        *_recipe(cfg),
    ]
    lineage = _lineage(run_dir, final_round) if cfg.algorithm != "online" else []
    if lineage:
        lines += [
            "",
            "## Data lineage",
            "",
            "Round t's solver trained on the prompt set X_t and its pairs:",
            "",
            *lineage,
        ]
    evals: list[tuple[str, Path]] = [("base (round 0)", run_dir / "round-000")]
    if cfg.algorithm == "online":
        evals.append(("this model (online)", run_dir / "online"))
    else:
        evals += [
            (f"round {t}" + (" (this model)" if t == final_round else ""), rd)
            for t, rd in _round_dirs(run_dir)
            if t > 0 and (final_round is None or t <= final_round)
        ]
    table = _evaluation(run_dir, evals)
    if table:
        lines += [
            "",
            "## Held-out evaluation",
            "",
            "Each number is a mean over the held-out prompts (a prompt's samples averaged first), with its n and a "
            "95% percentile-bootstrap interval over prompts. Prompt-level accuracies count a response as correct "
            "when all its verifiable constraints pass.",
            "",
            *table,
        ]
    else:
        lines += ["", "## Held-out evaluation", "", "This run has no held-out evaluation files."]
    repo = cfg.model.push_to_hub or "path/to/this/folder"
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        "```",
    ]
    if has_adapter:
        lines += [
            "",
            "The unmerged LoRA adapter of the last training round is in `adapter/` (load it with "
            "`peft.PeftModel.from_pretrained` on that round's starting model).",
        ]
    return "\n".join(lines) + "\n"


def write_model_card(run_dir: Path, cfg: RunConfig, model_dir: Path, final_round: int | None = None) -> Path:
    """Write ``model_dir/README.md`` (atomically) and return its path."""
    model_dir = Path(model_dir)
    text = model_card_text(run_dir, cfg, final_round, has_adapter=(model_dir.parent / "adapter").is_dir())
    path = model_dir / CARD_FILE
    fd, tmp = tempfile.mkstemp(prefix=CARD_FILE + ".", suffix=".tmp", dir=model_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- upload


def push_model(model_dir: Path, repo_id: str, private: bool = False, api: Any = None) -> str:
    """Upload `model_dir` (and ``adapter/`` next to it, as ``adapter/`` in the repo) to the hub repo `repo_id`,
    creating it if needed. Returns the repo URL. Failures raise :class:`evarl.errors.UploadError`."""
    model_dir = Path(model_dir)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(model_dir), commit_message="evarl: final model of the run"
        )
        adapter = model_dir.parent / "adapter"
        if adapter.is_dir():
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(adapter),
                path_in_repo="adapter",
                commit_message="evarl: unmerged LoRA adapter",
            )
    except Exception as e:  # noqa: BLE001  (network, auth, quota: one clear line, the run's files stay)
        raise UploadError(
            f"model.push_to_hub: uploading {model_dir} to {repo_id!r} failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); the run's files are complete, rerun the same command "
            "to retry the upload"
        ) from e
    return str(url)


def link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard-link every file under `src` into `dst` (a copy where links are not possible): the final folder
    costs no disk space, and it stays intact when the round folder it came from is removed."""
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if rel.parts[0] in skip:
            continue
        target = dst / rel
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def finish_model(
    run: Run,
    cfg: RunConfig,
    source: Path,
    final_round: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """The run's final model folder ``<run>/model/``: the trained model at `source` (hard links) plus this
    card as ``README.md``; ``<run>/adapter/`` likewise when `source` has a saved LoRA adapter next to it. Then,
    with ``model.push_to_hub``, the upload.

    Rebuilt (atomically) whenever its source or card changed, e.g. after more rounds were added to the run, and
    uploaded once per (source, card): the manifest's ``final_model`` entry remembers what was built and
    pushed. Rank 0 writes and uploads. Returns the folder.
    """
    from evarl.dist import barrier, is_main
    from evarl.io import replace_dir

    source = Path(source)
    final, adapter_src = run.dir / FINAL_DIR, source.parent / "adapter"
    has_adapter = adapter_src.is_dir()
    text = model_card_text(run.dir, cfg, final_round, has_adapter=has_adapter)
    state = {
        "source": str(source.relative_to(run.dir)) if source.is_relative_to(run.dir) else str(source),
        "card_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    prev = run.manifest.get("final_model") or {}
    fresh = {k: prev.get(k) for k in state} == state and (final / CARD_FILE).exists()
    if is_main() and not fresh:
        with replace_dir(final) as tmp:
            link_tree(source, tmp, skip=(CARD_FILE,))
            (tmp / CARD_FILE).write_text(text, encoding="utf-8")
        if has_adapter:
            with replace_dir(run.dir / "adapter") as tmp:
                link_tree(adapter_src, tmp)
        log(f"final model {final} (model card {final / CARD_FILE})")
    barrier()
    entry = {**state, "pushed": prev.get("pushed") if fresh else None}
    repo = cfg.model.push_to_hub
    if repo and entry["pushed"] != repo:
        if is_main():
            url = push_model(final, repo, cfg.model.hub_private)
            log(f"uploaded {final} to {url}")
        entry["pushed"] = repo
        barrier()
    run.set("final_model", entry)
    return final


def card_metadata(path: Path) -> dict[str, Any]:
    """The YAML metadata block of a model card (for tests and tools)."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    block = text[4 : text.index("\n---", 4)]
    return yaml.safe_load(block) or {}


__all__ = ["finish_model", "heldout_numbers", "model_card_text", "push_model", "write_model_card"]
