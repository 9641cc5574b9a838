"""`evarl eval --format alpaca --alpaca-annotator ...`: AlpacaEval 2.0 judging end to end through
`evarl.cli.main`, from --outputs / --baseline-outputs files (no generation), with a real tiny transformers judge
and with a real HTTP judge endpoint on 127.0.0.1. Skipped when `alpaca_eval` (the optional extra
`evarl[alpaca]`) is not importable."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "alpaca_eval", reason="alpaca-eval is the optional extra evarl[alpaca] (pip install 'evarl[alpaca]')"
)

from evarl.cli import main  # noqa: E402

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
TOPICS = ["rivers", "mountains", "deserts", "oceans", "forests", "islands"]


def _files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """prompts, model outputs, baseline outputs (AlpacaEval format) and an alpaca_eval.json-like set in which
    the prompts sit at known rows."""
    rows = [{"instruction": f"Name two {t}.", "dataset": "t"} for t in TOPICS]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(rows))
    model = tmp_path / "model.json"
    model.write_text(
        json.dumps(
            [
                {**r, "output": f"Two {t}: the first and the second." * (k + 1), "generator": "mine"}
                for k, (r, t) in enumerate(zip(rows, TOPICS))
            ]
        )  # fmt: skip
    )
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps([{**r, "output": "I do not know.", "generator": "base"} for r in rows]))
    full = (
        [{"instruction": f"Filler instruction {k}."} for k in range(4)]
        + rows
        + [{"instruction": "Last one."}]
    )
    aset = tmp_path / "alpaca_eval.json"
    aset.write_text(json.dumps(full))
    return prompts, model, base, aset


def _shown_preference(model: Any, tok: Any, row: dict[str, Any], template: str) -> float:
    """The weighted preference recomputed here: the package's prompt in the shown order, the judge's chat
    template, one forward pass, 2 - P(m) / (P(m) + P(M)), un-swapped for a switched row."""
    import pandas as pd
    import torch
    from alpaca_eval import utils

    s = row["is_switched_outputs"]
    first, second = (row["output_2"], row["output_1"]) if s else (row["output_1"], row["output_2"])
    df = pd.DataFrame([{"instruction": row["instruction"], "output_1": first, "output_2": second}])
    messages = utils.prompt_to_chatml(utils.make_prompts(df, template)[0][0])
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    pm = math.exp(float(logp[tok.encode("m", add_special_tokens=False)[0]]))
    pM = math.exp(float(logp[tok.encode("M", add_special_tokens=False)[0]]))
    shown = 2 - pm / (pm + pM)
    return 3 - shown if s else shown


@pytest.mark.filterwarnings("ignore::FutureWarning")  # sklearn deprecations inside the package
def test_tiny_judge_weighted_preference_and_package_lc(
    tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch
):
    import pandas as pd
    import sklearn
    from alpaca_eval.metrics import glm_winrate

    from evarl.eval.alpaca import load_annotator
    from evarl.models.loading import load_causal_lm, load_tokenizer

    prompts, model_file, base, aset = _files(tmp_path)
    out = tmp_path / "ev"
    rc = main(
        ["eval", "--format", "alpaca", "--prompts", str(prompts), "--outputs", str(model_file),
         "--baseline-outputs", str(base), "--judge", str(tiny_model_dir), "--alpaca-annotator", ANNOTATOR,
         "--bootstrap", "50", "--batch-size", "4", "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "LC win rate by evarl" in captured.err and "--alpaca-eval-set" in captured.err
    rows = json.loads((out / "annotations.json").read_text())
    summ = json.loads((out / "alpaca_eval.json").read_text())
    assert len(rows) == 6 and {r["generator_2"] for r in rows} == {"mine"}
    # the label tokens' exact probabilities: never a failure
    assert all(1.0 <= r["preference"] <= 2.0 for r in rows)
    assert summ["n"] == 6 and summ["n_failed"] == 0 and summ["lc_method"] == "evarl"
    assert summ["annotator"] == ANNOTATOR and summ["baseline"] == "base"
    for key in ("win_rate", "discrete_win_rate", "lc_win_rate"):
        lo, hi = summ[f"{key}_ci"]
        assert lo <= hi
    assert summ["win_rate"] == pytest.approx(100 * sum(r["preference"] - 1 for r in rows) / 6)

    # the judge's preference is the forward pass over the package's prompt in the judge's chat template
    model, tok = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    template = load_annotator(ANNOTATOR).template
    for r in rows:
        assert r["preference"] == pytest.approx(_shown_preference(model, tok, r, template), abs=1e-4)

    # with --alpaca-eval-set: the package's own LC win rate (its difficulty table patched with one written here)
    diff = [0.3 * ((k * 7) % 11 - 5) for k in range(11)]
    table = tmp_path / "df_gamed.csv"
    pd.DataFrame(
        [{"model": m, "index": k, "instruction_difficulty": d, "preference": p, "std_delta_len": s,
          "not_gamed_baseline": False}
         for m, p, s in (("verbose", 0.7, 1.0), ("concise", 0.3, -1.0)) for k, d in enumerate(diff)]
    ).to_csv(table, index=False)  # fmt: skip
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(table))
    out2 = tmp_path / "ev2"
    rc = main(
        ["eval", "--format", "alpaca", "--prompts", str(prompts), "--outputs", str(model_file),
         "--baseline-outputs", str(base), "--judge", str(tiny_model_dir), "--alpaca-annotator", ANNOTATOR,
         "--alpaca-eval-set", str(aset), "--alpaca-lc-bootstrap", "3", "--bootstrap", "50",
         "--out", str(out2)]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summ2 = json.loads((out2 / "alpaca_eval.json").read_text())
    rows2 = json.loads((out2 / "annotations.json").read_text())
    assert summ2["lc_method"] == "alpaca_eval" and summ2["lc_bootstrap_samples"] == 3
    frame = pd.DataFrame(rows2)[["instruction", "output_1", "output_2", "generator_1", "generator_2",
                                 "annotator", "preference"]]  # fmt: skip
    frame.index = [4 + TOPICS.index(r["instruction"].split()[-1].rstrip(".")) for r in rows2]
    with sklearn.config_context():
        expected = glm_winrate.get_length_controlled_winrate(frame, save_weights_dir=None)
    assert summ2["lc_win_rate"] == pytest.approx(float(expected["length_controlled_winrate"]), abs=1e-9)


class ScriptedEndpoint:
    """/v1/chat/completions answering with first-token logprobs: the longer output wins with P = 0.8 (as label
    "m" or "M" by where it is shown); a prompt about 'deserts' gets top logprobs without either label."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.srv: ThreadingHTTPServer | None = None

    def start(self) -> str:
        state = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                state.bodies.append(body)
                if state.status != 200:
                    data = json.dumps({"error": {"message": f"model {body['model']} not served"}}).encode()
                    self.send_response(state.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                user = body["messages"][-1]["content"]
                first = user.split('"model_identifier": "m",')[1].split('"""')[1]
                second = user.split('"model_identifier": "M",')[1].split('"""')[1]
                if "deserts" in user:
                    top = [{"token": "Both", "logprob": -0.1}, {"token": "The", "logprob": -3.0}]
                else:
                    p_first = 0.8 if len(first) > len(second) else 0.2
                    top = [{"token": "m", "logprob": math.log(p_first)},
                           {"token": "M", "logprob": math.log(1 - p_first)}]  # fmt: skip
                top = sorted(top, key=lambda t: -t["logprob"])
                resp = {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "length",
                                 "message": {"role": "assistant", "content": top[0]["token"]},
                                 "logprobs": {"content": [{**top[0], "bytes": None,
                                                           "top_logprobs": [{**t, "bytes": None} for t in top]}]}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
                }  # fmt: skip
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def stop(self) -> None:
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()


@pytest.fixture()
def endpoint() -> Iterator[tuple[ScriptedEndpoint, str]]:
    srv = ScriptedEndpoint()
    url = srv.start()
    yield srv, url
    srv.stop()


def test_endpoint_judge_logprobs(tmp_path: Path, endpoint, capsys, monkeypatch) -> None:
    srv, url = endpoint
    monkeypatch.setenv("EVARL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    prompts, model_file, base, _ = _files(tmp_path)
    args = ["eval", "--format", "alpaca", "--prompts", str(prompts), "--outputs", str(model_file),
            "--baseline-outputs", str(base), "--judge-endpoint", url, "--judge-model", "judge",
            "--alpaca-annotator", ANNOTATOR, "--bootstrap", "50", "--max-retries", "0"]  # fmt: skip
    rc = main([*args, "--out", str(tmp_path / "ev")])
    assert rc == 0, capsys.readouterr().err
    assert len(srv.bodies) == 6
    for b in srv.bodies:
        assert b["max_tokens"] == 1 and b["logprobs"] is True and b["top_logprobs"] == 5
        assert b["model"] == "judge" and [m["role"] for m in b["messages"]] == ["system", "user"]
    rows = json.loads((tmp_path / "ev" / "annotations.json").read_text())
    summ = json.loads((tmp_path / "ev" / "alpaca_eval.json").read_text())
    for r in rows:  # the model's outputs are the longer ones: P(model) = 0.8 whatever the shown order
        assert (
            r["preference"] is None
            if "deserts" in r["instruction"]
            else r["preference"] == pytest.approx(1.8)
        )
    assert summ["n"] == 5 and summ["n_failed"] == 1 and summ["win_rate"] == pytest.approx(80.0)
    # a rerun is served from the cache: no new request
    rc = main([*args, "--out", str(tmp_path / "ev2")])
    assert rc == 0 and len(srv.bodies) == 6


def test_endpoint_that_does_not_serve_the_judge(tmp_path: Path, endpoint, capsys, monkeypatch) -> None:
    srv, url = endpoint
    srv.status = 404
    monkeypatch.setenv("EVARL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    prompts, model_file, base, _ = _files(tmp_path)
    rc = main(
        ["eval", "--format", "alpaca", "--prompts", str(prompts), "--outputs", str(model_file),
         "--baseline-outputs", str(base), "--judge-endpoint", url, "--judge-model", "nope",
         "--alpaca-annotator", ANNOTATOR, "--max-retries", "0", "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "HTTP 404" in err and url in err and "'nope'" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["status"] == "failed" and not (tmp_path / "ev" / "alpaca_eval.json").exists()
