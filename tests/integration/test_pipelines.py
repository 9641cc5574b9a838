"""The four pipeline recipes end to end on SmolLM2-135M-Instruct (policy, judge and teacher), at reduced sizes.

* self-reward (configs/self-reward.yaml): round-000/sft fine-tunes SmolLM2 on shipped EFT rows (M_1), few-shot
  self-instruct creates the prompts, the policy judges its responses with the 5-point prompt, best/worst -> DPO;
* teacher-reward and teacher-demo: the teacher is M_1 of the self-reward run served by a real `transformers serve`
  on 127.0.0.1 (the judge's and the teacher's requests go over HTTP);
* iterative-rlhf: hybrid data (an offline preference set + every round's pairs, a duplicate dropped), n
  responses best vs worst with a length penalty, pi_0 as the reference, best_round recorded;
* a teacher endpoint that times out: every prompt counted as teacher_failed, the run finishes; one that refuses
  connections: one clear EndpointError, the finished stages kept for the rerun.

Each recipe test asserts that at least one pair was trained and that the weights changed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from evarl.config import load_config
from evarl.loop import run

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow
EFT_ROWS = 12

SMALL = [
    "rounds=1",
    "task.train_prompts=4",
    "generation.max_new_tokens=24",
    "generation.batch_size=16",
    "creator.sample_fraction=0.5",
    "creator.num_evolutions=2",
    "creator.max_new_tokens=32",
    "solver.batch_size=4",
    "solver.max_length=384",
    "solver.max_prompt_length=320",
    "solver.learning_rate=1e-4",
    "solver.epochs=1",
    "solver.warmup_ratio=0",  # a warm-up step starts at lr 0: a one-step round would change nothing
    "solver.save_every=100",
    "eval.enabled=false",
]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(model_dir).glob("*.safetensors"))))


def _changed(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return any(not torch.equal(wa[k], wb[k]) for k in wa if k in wb)


def _counts(run_dir: Path, stage: str) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())["stages"][stage]["counts"]


def _run(recipe: str, tmp: Path, name: str, extra: list[str]) -> tuple[dict[str, Any], Path]:
    cfg = load_config(
        ROOT / "configs" / f"{recipe}.yaml", [f"output_dir={tmp}", f"name={name}", *SMALL, *extra]
    )
    return run(cfg, progress=False), tmp / name


def _assert_trained(run_dir: Path, start: Path) -> int:
    rd = run_dir / "round-001"
    trained = _counts(run_dir, "round-001/train")
    assert "skipped" not in trained, trained
    assert trained["pairs_trained"] >= 1
    pairs = [json.loads(x) for x in (rd / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) >= 1
    assert _changed(start, rd / "train" / "model")
    return len(pairs)


# ---------------------------------------------------------------- self-reward (and M_1 for the teacher)


@pytest.fixture(scope="module")
def self_reward(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> tuple[dict[str, Any], Path]:
    from evarl.eft import SHIPPED_EFT

    tmp = tmp_path_factory.mktemp("self-reward")
    eft = tmp / "eft.jsonl"  # half of the shipped EFT rows: 3 SFT steps a epoch at batch 4
    eft.write_text("".join(SHIPPED_EFT.read_text().splitlines(keepends=True)[:EFT_ROWS]))
    return _run(
        "self-reward",
        tmp,
        "sr",
        [
            "generation.n=4",
            "generation.temperature=1.0",
            "reward.sources=[{name: judge, model: policy, options: {max_new_tokens: 40}}]",
            "reward.length_penalty=0.001",  # breaks ties between equally judged responses
            f"solver.eft_data=[{eft}]",
            "creator.max_new_tokens=48",
            "solver.max_length=448",  # the 5-point judge prompt of an EFT example is ~350 tokens: not cut
            "solver.max_prompt_length=400",
            "solver.sft_epochs=3",
            "solver.sft_learning_rate=1e-4",
        ],
    )


def test_self_reward_pipeline(self_reward: tuple[dict[str, Any], Path], smollm2_dir: Path) -> None:
    summary, rd = self_reward
    sft = _counts(rd, "round-000/sft")
    assert sft["eft_examples"] == EFT_ROWS and sft["steps"] == 9
    m1 = rd / "round-000" / "sft" / "model"
    assert _changed(smollm2_dir, m1)  # M_1 = SFT(M_0)
    evolved = [json.loads(x) for x in (rd / "round-001" / "evolved.jsonl").read_text().splitlines()]
    assert evolved and all(p["method"] == "fewshot_selfinstruct" for p in evolved)
    assert all(p["messages"][-1]["content"].startswith("Provide a direct response") for p in evolved)
    score = _counts(rd, "round-001/train_score")
    assert score["scored"] > score["failed"]  # the EFT'd policy states parsable 5-point scores
    n = _assert_trained(rd, m1)
    assert summary["rounds"][0]["pairs"] == n


# ---------------------------------------------------------------- a teacher behind `transformers serve`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def teacher_server(self_reward: tuple[dict[str, Any], Path], tmp_path_factory: pytest.TempPathFactory):
    """`transformers serve` on 127.0.0.1 with the self-reward run's M_1 (SmolLM2 + EFT) as the teacher."""
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    if not Path(exe).exists():
        pytest.fail("the `transformers` CLI is missing: pip install 'transformers[serving]' (test extra)")
    model = str(self_reward[1] / "round-000" / "sft" / "model")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [exe, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(1)
        yield {"endpoint": f"{url}/v1", "model": model}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_teacher_reward_pipeline_over_http(
    teacher_server: dict[str, str], tmp_path: Path, smollm2_dir: Path
) -> None:
    judge = {
        "name": "judge",
        "model": teacher_server["model"],
        "options": {"endpoint": teacher_server["endpoint"], "max_new_tokens": 40, "concurrency": 2},
    }
    summary, rd = _run(
        "teacher-reward",
        tmp_path,
        "tr",
        [
            "generation.n=4",
            "generation.temperature=1.0",
            f"reward.sources={json.dumps([judge])}",
            # the few-step EFT teacher often gives a prompt's 4 responses the same score: length breaks the ties
            "reward.length_penalty=0.001",
        ],
    )
    score = _counts(rd, "round-001/train_score")
    assert score["scored"] > score["failed"]
    scores = [json.loads(x) for x in (rd / "round-001" / "train_scores.jsonl").read_text().splitlines()]
    assert len(scores) == score["scored"]
    _assert_trained(rd, smollm2_dir)


def test_teacher_demo_pipeline_over_http(
    teacher_server: dict[str, str], tmp_path: Path, smollm2_dir: Path
) -> None:
    summary, rd = _run(
        "teacher-demo",
        tmp_path,
        "td",
        [
            f"solver.teacher={teacher_server['model']}",
            f"solver.teacher_endpoint={teacher_server['endpoint']}",
            "generation.max_new_tokens=160",  # room for a whole teacher answer (a cut one is not paired)
        ],
    )
    teacher = [
        json.loads(x) for x in (rd / "round-001" / "teacher_generations.jsonl").read_text().splitlines()
    ]
    assert teacher and all(t["finish_reason"] != "error" for t in teacher)
    pairs = [json.loads(x) for x in (rd / "round-001" / "pairs.jsonl").read_text().splitlines()]
    by_prompt = {t["prompt_id"]: t["text"] for t in teacher}
    assert pairs and all(p["chosen"][0]["content"] == by_prompt[p["prompt_id"]] for p in pairs)
    assert not (rd / "round-001" / "train_scores.jsonl").exists()  # demo pairs are not ordered by a reward
    _assert_trained(rd, smollm2_dir)


class Stalling:
    """An HTTP server on 127.0.0.1 that holds every request longer than the client waits (a teacher timing out)."""

    def __enter__(self) -> str:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                time.sleep(3)
                try:
                    self.send_response(504)
                    self.end_headers()
                except OSError:
                    pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        import threading

        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def __exit__(self, *a: Any) -> None:
        self.srv.shutdown()


NO_CREATOR = [
    "creator.enabled=false",
    "task.train_prompts=2",
    "solver.teacher=m",
    "solver.teacher_timeout_s=0.5",
]


def test_teacher_timeouts_are_counted_and_refusal_stops_cleanly(tmp_path: Path) -> None:
    from evarl.errors import EndpointError

    with Stalling() as url:
        summary, rd = _run(
            "teacher-demo", tmp_path, "stalled", [*NO_CREATOR, f"solver.teacher_endpoint={url}"]
        )
    pairs = _counts(rd, "round-001/pairs")
    assert pairs["pairs"] == 0 and pairs["skipped"]["teacher_failed"] == 2  # counted, no pair, run finished
    assert _counts(rd, "round-001/train")["skipped"] == "no pairs"
    refused = f"solver.teacher_endpoint=http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(EndpointError):  # the whole endpoint is down: one clear error (exit 2), not N failures
        _run("teacher-demo", tmp_path, "refused", [*NO_CREATOR, refused])
    done = json.loads((tmp_path / "refused" / "manifest.json").read_text())["stages"]
    assert done["round-001/train_generate"]["status"] == "done"  # kept: a rerun resumes at teacher_generate


# ---------------------------------------------------------------- online iterative RLHF with hybrid data


def test_iterative_rlhf_hybrid_data(tmp_path: Path, smollm2_dir: Path) -> None:
    offline = tmp_path / "offline.jsonl"
    row = {"prompt": "Say hello in French.", "chosen": "Bonjour !", "rejected": "Hello."}
    same = {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "Hi."}
    offline.write_text("".join(json.dumps(x) + "\n" for x in (row, row, same)))
    summary, rd = _run(
        "iterative-rlhf",
        tmp_path,
        "rlhf",
        [
            "rounds=2",
            "task.train_prompts=3",
            "task.heldout_prompts=2",
            "generation.n=4",
            "eval.enabled=true",
            "eval.max_new_tokens=16",
            f"solver.offline_pairs={offline}",
        ],
    )
    c1, c2 = _counts(rd, "round-001/train"), _counts(rd, "round-002/train")
    p1 = _counts(rd, "round-001/pairs")["pairs"]
    p2 = _counts(rd, "round-002/pairs")["pairs"]
    assert (c1["offline_pairs"], c1["duplicates_dropped"], c1["identical_dropped"]) == (3, 1, 1)
    assert c1["pairs_trained"] == 1 + p1 and c2["pairs_trained"] == 1 + p1 + p2  # history: all rounds so far
    assert c2["from_rounds"] == 2
    assert _changed(smollm2_dir, rd / "round-001" / "train" / "model")
    best = summary["best_round"]
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["best_round"] == best and best["round"] in (0, 1, 2)
    assert best["n"] == 2 and best["lo"] <= best["mean"] <= best["hi"]
    assert best["mean"] == max(x["mean"] for x in best["all"])
