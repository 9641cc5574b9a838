"""The bad-input catalogue: every case stops during validation or reading with exit code 2 and one message that
names the culprit (config key, file:line:field, path, URL), no traceback, and no pre-existing file changed.

Each case runs `evarl.cli.main(argv)` in-process; none loads a model (everything fails before compute).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evarl.cli import main

GOOD_PROMPT = json.dumps({"prompt": "Write a haiku."})
IFEVAL_ROW = {"key": 1, "prompt": "Write.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
PREF_ROW = json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."})


def _ifeval(**change: object) -> str:
    return json.dumps({**IFEVAL_ROW, **change})


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bad:
    """One bad input: argv and expected message fragments ("{d}" is the test's tmp dir), and the files to make
    first (text, bytes, or None for a directory)."""

    id: str
    args: list[str]
    expect: tuple[str, ...]
    files: dict[str, str | bytes | None] = field(default_factory=dict)


def _v(*overrides: str) -> list[str]:
    return ["validate", *overrides]


def _train_file(name: str = "p.jsonl") -> list[str]:
    return ["validate", "task.name=file", f"task.train_file={{d}}/{name}"]


def _eval(name: str = "p.jsonl", fmt: str = "default", *more: str) -> list[str]:
    return ["eval", "--prompts", f"{{d}}/{name}", "--format", fmt, "--out", "{d}/out", *more]


CONFIG = [
    # -- numbers: non-finite, types, ranges
    Bad("beta-nan", _v("solver.beta=nan"), ("solver.beta", "finite", "nan")),
    Bad("beta-yaml-nan", _v("solver.beta=.nan"), ("solver.beta", "finite")),
    Bad("beta-inf", _v("solver.beta=inf"), ("solver.beta", "finite", "inf")),
    Bad("beta-neg-inf", _v("solver.beta=-.inf"), ("solver.beta", "finite")),
    Bad("beta-text", _v("solver.beta=abc"), ("solver.beta", "expected a number", "abc")),
    Bad("beta-zero", _v("solver.beta=0"), ("solver.beta", "> 0")),
    Bad("lr-zero", _v("solver.learning_rate=0"), ("solver.learning_rate", "> 0", "got 0")),
    Bad("lr-negative", _v("solver.learning_rate=-1e-5"), ("solver.learning_rate", "> 0")),
    Bad("lr-huge-float", _v("solver.learning_rate=1e400"), ("solver.learning_rate", "finite")),
    Bad("online-lr-inf", _v("online.learning_rate=inf"), ("online.learning_rate", "finite")),
    Bad("epochs-float", _v("solver.epochs=1.5"), ("solver.epochs", "expected an integer", "1.5")),
    Bad("epochs-bool", _v("solver.epochs=true"), ("solver.epochs", "expected an integer")),
    Bad("epochs-zero", _v("solver.epochs=0"), ("solver.epochs", "> 0")),
    Bad("batch-list", _v("solver.batch_size=[1,2]"), ("solver.batch_size", "expected an integer")),
    Bad("batch-huge", _v("generation.batch_size=" + "9" * 30), ("generation.batch_size", "out of range")),
    Bad("n-one", _v("generation.n=1"), ("generation.n", ">= 2", "got 1")),
    Bad("n-zero", _v("generation.n=0"), ("generation.n", ">= 2")),
    Bad("top-p-zero", _v("generation.top_p=0"), ("generation.top_p", "(0, 1]")),
    Bad("top-p-big", _v("generation.top_p=1.5"), ("generation.top_p", "1.5")),
    Bad("temperature-neg", _v("generation.temperature=-0.1"), ("generation.temperature", ">= 0")),
    Bad("eval-temperature-nan", _v("eval.temperature=nan"), ("eval.temperature", "finite")),
    Bad("sample-fraction-zero", _v("creator.sample_fraction=0"), ("creator.sample_fraction", "(0, 1]")),
    Bad("mix-ratio", _v("creator.mix_ratio=1.2"), ("creator.mix_ratio", "[0, 1]", "1.2")),
    Bad("label-smoothing-half", _v("solver.label_smoothing=0.5"), ("solver.label_smoothing", "[0, 0.5)")),
    Bad("warmup-ratio", _v("solver.warmup_ratio=2"), ("solver.warmup_ratio", "[0, 1]")),
    Bad("ratio-evol", _v("online.ratio_evol=-0.1"), ("online.ratio_evol", "[0, 1]")),
    Bad("rounds-zero", _v("rounds=0"), ("rounds", "> 0")),
    Bad("seed-negative", _v("seed=-1"), ("seed", ">= 0", "-1")),
    Bad("lora-dropout-one", _v("solver.lora.dropout=1"), ("solver.lora.dropout", "[0, 1)")),
    Bad("gpu-mem-zero", _v("generation.gpu_memory_utilization=0"), ("generation.gpu_memory_utilization",)),
    Bad("prompt-len", _v("solver.max_prompt_length=400"), ("solver.max_prompt_length", "solver.max_length")),
    Bad("length-penalty", _v("reward.length_penalty=-1"), ("reward.length_penalty", ">= 0")),
    Bad("weight-nan", _v("reward.sources=[{name: verifier, weight: .nan}]"), ("reward.sources[0].weight",)),
    Bad("samples-zero", _v("reward.sources=[{name: judge, samples: 0}]"), ("reward.sources[0].samples",)),
    Bad("global-batch", _v("solver.global_batch_size=3"), ("solver.global_batch_size", "3")),
    Bad("kl-negative", _v("online.kl_coef=-0.5"), ("online.kl_coef", ">= 0")),
    # -- counts beyond what the task supplies
    Bad("train-prompts-too-many", _v("task.train_prompts=100000"), ("task.train_prompts", "100000")),
    Bad("heldout-too-many", _v("task.heldout_prompts=1000"), ("task.heldout_prompts", "1000")),
    Bad("constraints-order", _v("task.min_constraints=4"), ("task.min_constraints",)),
    # -- booleans parsed strictly, also inside reward source options
    Bad(
        "flag-maybe", _v("model.trust_remote_code=maybe"), ("model.trust_remote_code", "true/false", "maybe")
    ),
    Bad("flag-two", _v("eval.enabled=2"), ("eval.enabled", "true/false")),
    Bad(
        "option-flag-text",
        _v("reward.sources=[{name: classifier, model: x/y, options: {trust_remote_code: 'perhaps'}}]"),
        ("reward.sources[0].options.trust_remote_code", "true/false", "perhaps"),
    ),
    Bad(
        "option-batch-text",
        _v("reward.sources=[{name: judge, options: {batch_size: '8x'}}]"),
        ("reward.sources[0].options.batch_size", "integer", "8x"),
    ),
    Bad(
        "option-top-p-nan",
        _v("reward.sources=[{name: judge, options: {top_p: .nan}}]"),
        ("reward.sources[0].options.top_p", "finite"),
    ),
    Bad(
        "option-endpoint-url",
        _v("reward.sources=[{name: judge, options: {endpoint: 'localhost:8000'}}]"),
        ("reward.sources[0].options.endpoint", "localhost:8000"),
    ),
    # -- names: unknown keys, plug-ins, choices
    Bad("unknown-key", _v("solver.betta=0.1"), ("solver.betta", "unknown key")),
    Bad("unknown-section", _v("solverr.beta=0.1"), ("solverr", "unknown key")),
    Bad("section-scalar", _v("solver=3"), ("solver", "expected a mapping")),
    Bad("bad-preset", _v("solver.preset=dpo2"), ("solver.preset", "dpo2")),
    Bad("bad-loss", _v("solver.loss=dpoo"), ("solver.loss", "dpoo")),
    Bad("bad-metric", _v("creator.metric=a_mn"), ("creator.metric", "a_mn")),
    Bad("bad-backend", _v("generation.backend=nope"), ("generation.backend", "nope")),
    Bad("bad-reward", _v("reward.sources=[{name: nope}]"), ("reward.sources[0].name", "nope")),
    Bad("no-reward", _v("reward.sources=[]"), ("reward.sources",)),
    Bad("bad-checkers", _v("task.checkers=nope"), ("task.checkers", "nope")),
    Bad("bad-algorithm", _v("algorithm=sideways"), ("algorithm", "sideways")),
    Bad("bad-online-solver", _v("online.solver=ppo"), ("online.solver", "ppo")),
    Bad("bad-filter", _v("creator.filters=[bogus]"), ("creator.filters[0]", "bogus")),
    Bad("bad-dtype", _v("model.dtype=fp8"), ("model.dtype", "fp8")),
    Bad("bad-name", _v("name=a/b"), ("name", "a/b")),
    Bad("bad-device", _v("device=tpu"), ("device", "tpu")),
    # `evarl validate` only notes it (a GPU recipe checked on a laptop); `evarl run` refuses before any model loads
    Bad(
        "vllm-not-installed",
        ["run", "generation.backend=vllm", "output_dir={d}/runs"],
        ("generation.backend", "vllm", "not installed"),
    ),
    Bad("endpoint-scheme", _v("generation.endpoint=ftp://host/v1"), ("generation.endpoint", "ftp://host/v1")),
    Bad(
        "endpoint-port", _v("generation.endpoint=http://127.0.0.1:99999/v1"), ("generation.endpoint", "99999")
    ),
    # -- override syntax and config files
    Bad("override-empty-part", _v("solver..beta=1"), ("solver..beta",)),
    Bad("override-empty-key", _v("=1"), ("=1", "key.path")),
    Bad("config-missing", _v("{d}/nope.yaml"), ("{d}/nope.yaml", "does not exist")),
    Bad("config-directory", _v("{d}/conf"), ("{d}/conf", "directory"), {"conf": None}),
    Bad(
        "config-bad-yaml", _v("{d}/c.yaml"), ("{d}/c.yaml:3", "not valid YAML"), {"c.yaml": "a: 1\nb: [1,\n"}
    ),
    Bad("config-list", _v("{d}/c.yaml"), ("{d}/c.yaml", "mapping"), {"c.yaml": "- 1\n- 2\n"}),
    Bad("config-scalar", _v("{d}/c.yaml"), ("{d}/c.yaml", "mapping"), {"c.yaml": "hello\n"}),
    Bad("config-not-utf8", _v("{d}/c.yaml"), ("{d}/c.yaml", "UTF-8"), {"c.yaml": b"name: \xff\xfe\n"}),
    Bad(
        "config-nan-inside", _v("{d}/c.yaml"), ("solver.beta", "finite"), {"c.yaml": "solver: {beta: .nan}\n"}
    ),
    Bad("config-int-key", _v("{d}/c.yaml"), ("1", "unknown key"), {"c.yaml": "1: 2\n"}),
    Bad(
        "two-config-files",
        _v("{d}/a.yaml", "{d}/b.yaml"),
        ("{d}/b.yaml", "only one config file"),
        {"a.yaml": "rounds: 1\n", "b.yaml": "rounds: 1\n"},
    ),
    Bad("run-bad-config", ["run", "solver.beta=nan", "output_dir={d}/runs"], ("solver.beta", "finite")),
]

MODELS = [
    Bad("model-missing", _v("model.path={d}/nope"), ("model.path", "{d}/nope", "does not exist")),
    Bad("model-no-config", _v("model.path={d}/m"), ("model.path", "config.json"), {"m": None}),
    Bad("model-is-file", _v("model.path={d}/m.bin"), ("model.path", "m.bin", "file"), {"m.bin": "x"}),
    Bad("model-bad-hub-id", _v("model.path=a/b/c/"), ("model.path", "a/b/c/")),
    Bad(
        "gguf-missing",
        _v("model.path={d}/m", "model.gguf_file=w.gguf"),
        ("model.path", "w.gguf"),
        {"m": None},
    ),
    Bad("reward-model-missing", _v("reward.sources=[{name: classifier, model: ./nope-rm}]"), ("./nope-rm",)),
    Bad("creator-model-missing", _v("creator.model={d}/nope"), ("creator.model", "{d}/nope")),
]

DATA = [
    Bad("train-file-missing", _train_file("nope.jsonl"), ("task.train_file", "nope.jsonl")),
    Bad("train-bad-json", _train_file(), ("p.jsonl:2", "JSON"), {"p.jsonl": GOOD_PROMPT + "\n{broken\n"}),
    Bad("train-not-object", _train_file(), ("p.jsonl:1",), {"p.jsonl": "[1, 2]\n"}),
    Bad("train-missing-prompt", _train_file(), ("p.jsonl:1", "prompt"), {"p.jsonl": '{"text": "x"}\n'}),
    Bad("train-empty-prompt", _train_file(), ("p.jsonl:1", "prompt"), {"p.jsonl": '{"prompt": "  "}\n'}),
    Bad(
        "train-bad-role",
        _train_file(),
        ("p.jsonl:1", "role", "robot"),
        {"p.jsonl": json.dumps({"prompt": [{"role": "robot", "content": "x"}]}) + "\n"},
    ),
    Bad(
        "train-unknown-instruction",
        _train_file(),
        ("p.jsonl:1", "instruction_id_list", "punctuation:no_commas"),
        {"p.jsonl": _ifeval(instruction_id_list=["punctuation:no_commas"]) + "\n"},
    ),
    Bad(
        "train-kwarg-type",
        _train_file(),
        ("p.jsonl:1", "kwargs[0].num_words", "integer", "ten"),
        {
            "p.jsonl": _ifeval(
                instruction_id_list=["length_constraints:number_words"],
                kwargs=[{"num_words": "ten", "relation": "at least"}],
            )
            + "\n"
        },
    ),
    Bad(
        "train-kwarg-name",
        _train_file(),
        ("p.jsonl:1", "kwargs[0].num_word", "num_words"),
        {
            "p.jsonl": _ifeval(
                instruction_id_list=["length_constraints:number_words"],
                kwargs=[{"num_word": 10, "relation": "at least"}],
            )
            + "\n"
        },
    ),
    Bad(
        "train-kwarg-value",
        _train_file(),
        ("p.jsonl:1", "kwargs[0]", "relation"),
        {
            "p.jsonl": _ifeval(
                instruction_id_list=["length_constraints:number_words"],
                kwargs=[{"num_words": 10, "relation": "around"}],
            )
            + "\n"
        },
    ),
    Bad(
        "train-constraints-record",
        _train_file(),
        ("p.jsonl:1", "constraints[0]", "keywords"),
        {
            "p.jsonl": json.dumps(
                {"prompt": "x", "constraints": [{"id": "keywords:existence", "kwargs": {"keywords": "cat"}}]}
            )
            + "\n"
        },
    ),
    Bad("train-not-utf8", _train_file(), ("p.jsonl", "UTF-8"), {"p.jsonl": b'{"prompt": "\xff\xfe"}\n'}),
    Bad("train-empty-file", _train_file(), ("p.jsonl", "no prompts"), {"p.jsonl": "\n\n"}),
    Bad("train-directory", _train_file("dir.jsonl"), ("dir.jsonl",), {"dir.jsonl": None}),
    Bad(
        "eval-kwarg-type",
        _eval("i.jsonl", "ifeval"),
        ("i.jsonl:1", "kwargs[0].num_sentences", "integer"),
        {
            "i.jsonl": _ifeval(
                instruction_id_list=["length_constraints:number_sentences"],
                kwargs=[{"num_sentences": 2.5, "relation": "less than"}],
            )
            + "\n"
        },
    ),
    Bad(
        "eval-unknown-instruction",
        _eval("i.jsonl", "ifeval"),
        ("i.jsonl:2", "instruction_id_list", "nope:nope"),
        {"i.jsonl": _ifeval() + "\n" + _ifeval(key=2, instruction_id_list=["nope:nope"]) + "\n"},
    ),
    Bad(
        "eval-kwargs-not-list",
        _eval("i.jsonl", "ifeval"),
        ("i.jsonl:1", "kwargs"),
        {"i.jsonl": _ifeval(kwargs={"a": 1}) + "\n"},
    ),
    Bad(
        "eval-record-bad-constraint",
        _eval("r.jsonl"),
        ("r.jsonl:1", "constraints[0].kwargs.small_n", "integer"),
        {
            "r.jsonl": json.dumps(
                {
                    "id": "a",
                    "messages": [{"role": "user", "content": "Write."}],
                    "constraints": [{"id": "count:conjunctions", "kwargs": {"small_n": "two"}}],
                }
            )
            + "\n"
        },
    ),
    Bad("eval-prompts-missing", _eval("nope.jsonl"), ("nope.jsonl",)),
    Bad("eval-prompts-bad-json", _eval(), ("p.jsonl:1", "JSON"), {"p.jsonl": "{nope\n"}),
    Bad("eval-prompts-empty", _eval(), ("p.jsonl", "no prompts"), {"p.jsonl": ""}),
    Bad("eval-prompts-not-utf8", _eval(), ("p.jsonl", "UTF-8"), {"p.jsonl": b"\xff\n"}),
    Bad("eval-prompts-directory", _eval("dir"), ("dir",), {"dir": None}),
    Bad(
        "eval-endpoint-without-url",
        _eval("p.jsonl", "default", "--backend", "openai"),
        ("--endpoint",),
        {"p.jsonl": GOOD_PROMPT + "\n"},
    ),
]

REWARD_MODELS = [
    Bad(
        "train-rm-missing-data",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/nope.jsonl", "--out", "{d}/rm"],
        ("nope.jsonl", "does not exist"),
        {"bb/config.json": "{}"},
    ),
    Bad(
        "train-rm-bad-row",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/t.jsonl", "--out", "{d}/rm"],
        ("t.jsonl:2", "rejected"),
        {
            "bb/config.json": "{}",
            "t.jsonl": PREF_ROW + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n",
        },
    ),
    Bad(
        "train-rm-lr-nan",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/t.jsonl", "--out", "{d}/rm", "--lr", "nan"],
        ("--lr", "nan"),
        {"bb/config.json": "{}", "t.jsonl": PREF_ROW + "\n"},
    ),
    Bad(
        "train-rm-epochs-zero",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/t.jsonl", "--out", "{d}/rm", "--epochs", "0"],
        ("--epochs", "0"),
        {"bb/config.json": "{}", "t.jsonl": PREF_ROW + "\n"},
    ),
    Bad(
        "train-rm-template-bt",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/t.jsonl", "--out", "{d}/rm", "--template", "x"],
        ("--template",),
        {"bb/config.json": "{}", "t.jsonl": PREF_ROW + "\n"},
    ),
    Bad(
        "eval-rm-bad-json",
        ["eval-rm", "--model", "{d}/bb", "--data", "{d}/t.jsonl"],
        ("t.jsonl:1", "JSON"),
        {"bb/config.json": "{}", "t.jsonl": "{oops\n"},
    ),
    Bad(
        "eval-rm-empty",
        ["eval-rm", "--model", "{d}/bb", "--data", "{d}/t.jsonl"],
        ("t.jsonl", "no preference rows"),
        {"bb/config.json": "{}", "t.jsonl": "\n"},
    ),
    Bad(
        "eval-rm-batch-zero",
        ["eval-rm", "--model", "{d}/bb", "--data", "{d}/t.jsonl", "--batch-size", "0"],
        ("--batch-size", "0"),
        {"bb/config.json": "{}", "t.jsonl": PREF_ROW + "\n"},
    ),
]

REWARD_MODELS += [
    Bad(
        "train-rm-backbone-not-a-model",
        ["train-rm", "--backbone", "{d}/bb", "--train", "{d}/t.jsonl", "--out", "{d}/rm"],
        ("--backbone", "config.json"),
        {"bb": None, "t.jsonl": PREF_ROW + "\n"},
    ),
    Bad(
        "eval-rm-model-missing",
        ["eval-rm", "--model", "{d}/nope", "--data", "{d}/t.jsonl"],
        ("--model", "{d}/nope"),
        {"t.jsonl": PREF_ROW + "\n"},
    ),
    Bad(
        "eval-rm-hub-not-cached",
        ["eval-rm", "--model", "nobody/no-such-model", "--data", "{d}/t.jsonl"],
        ("--model", "nobody/no-such-model", "HF_HUB_OFFLINE"),
        {"t.jsonl": PREF_ROW + "\n"},
    ),
]

RUNS = [
    Bad(
        "run-dir-bad-manifest",
        ["run", "output_dir={d}/rr", "name=r"],
        ("{d}/rr/r", "manifest.json"),
        {"rr/r/manifest.json": "{bad"},
    ),
    Bad("run-output-dir-is-file", ["run", "output_dir={d}/afile", "name=r"], ("afile",), {"afile": "x"}),
]

REPORTS = [
    Bad("report-missing-dir", ["report", "{d}/runs/nope"], ("{d}/runs/nope",)),
    Bad("report-file-not-dir", ["report", "{d}/x.txt"], ("{d}/x.txt",), {"x.txt": "hello"}),
    Bad(
        "report-bad-manifest",
        ["report", "{d}/r"],
        ("manifest.json",),
        {"r": None, "r/manifest.json": "{not json", "r/config.yaml": "rounds: 1\n"},
    ),
]

ALL = CONFIG + MODELS + DATA + REWARD_MODELS + RUNS + REPORTS


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make(root: Path, files: dict[str, str | bytes | None]) -> None:
    for name, content in files.items():
        p = root / name
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content, encoding="utf-8")


def run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    """Run the CLI on bad input; check the common contract (exit 2, one `evarl: error:` message, no traceback,
    pre-existing files unchanged) and return (exit code, stderr)."""
    before = _snapshot(tmp_path)
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert err.count("evarl: error: ") == 1, err
    # the message, its continuation lines (a config's list of problems) and notes: nothing else
    assert all(line.startswith(("evarl: error: ", "  ", "note: ")) for line in err.splitlines()), err
    assert "Traceback" not in err + out and "internal error" not in err
    after = _snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing that was there changed or vanished
    return rc, err


def test_catalogue_size() -> None:
    assert len({c.id for c in ALL}) == len(ALL) >= 80


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_bad_input(case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    if case.id == "vllm-not-installed" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    monkeypatch.chdir(tmp_path)  # relative paths (./nope-rm) resolve inside the test's folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    _make(tmp_path, case.files)
    args = [a.replace("{d}", str(tmp_path)) for a in case.args]
    _, err = run_bad(tmp_path, capsys, args)
    for fragment in case.expect:
        assert fragment.replace("{d}", str(tmp_path)) in err, (fragment, err)
    if case.id == "run-bad-config":
        assert not (tmp_path / "runs").exists()  # refused before the run directory was made


def test_unreachable_endpoint_names_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evarl eval` against a closed port on 127.0.0.1: one line naming the URL, exit 2, and the summary (if
    any) says the evaluation failed."""
    from evarl.generation import openai_api

    real_init = openai_api.OpenAIGenerator.__init__

    def no_retries(self: object, *args: object, **kwargs: object) -> None:  # keeps the unit test fast
        kwargs["max_retries"] = 0
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(openai_api.OpenAIGenerator, "__init__", no_retries)
    (tmp_path / "p.jsonl").write_text(GOOD_PROMPT + "\n")
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    args = _eval("p.jsonl", "default", "--backend", "openai", "--endpoint", url, "--endpoint-model", "m")
    _, err = run_bad(tmp_path, capsys, [a.replace("{d}", str(tmp_path)) for a in args])
    assert url in err, err
    summary = tmp_path / "out" / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] == "failed"


def test_unexpected_error_saves_a_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    """A bug (an exception no check expects) exits 1 with one short line and the path of the saved traceback."""
    import evarl.cli as cli

    def broken(ns: object) -> int:
        raise TypeError("unsupported operand")

    monkeypatch.setenv("EVARL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "cmd_list", broken)
    rc = main(["list"])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error: TypeError: unsupported operand" in err and "Traceback" not in err
    saved = list((tmp_path / "cache" / "tracebacks").glob("*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert "Traceback" in saved[0].read_text() and "unsupported operand" in saved[0].read_text()


def test_usage_error_stays_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["eval", "--format", "nope"])
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_good_config_passes(capsys) -> None:
    assert main(["validate"]) == 0
    assert "ok" in capsys.readouterr().out


def test_every_numeric_field_has_a_range() -> None:
    from evarl.config import RANGES, numeric_fields

    assert sorted(set(numeric_fields()) - set(RANGES)) == []
    assert sorted(set(RANGES) - set(numeric_fields())) == []


@pytest.mark.parametrize("text", ["false", "False", "no", "0", "off", False, 0])
def test_false_never_turns_a_flag_on(text: object) -> None:
    from evarl.config import RewardSourceConfig, check_config, parse_bool
    from evarl.rewards.combine import source_trust_remote_code

    assert parse_bool(text) is False
    src = RewardSourceConfig(name="classifier", model="x/y", options={"trust_remote_code": text})
    assert source_trust_remote_code(src) is False
    _, errors, _ = check_config(None, [f"model.trust_remote_code={text}"])
    assert not any("trust_remote_code" in e for e in errors)
