"""Using a trained bridge: ``lb.load_bridge(RUN)`` and ``latentbridge generate RUN``.

On the shipped pair (whose answers differ from item to item, so a mix-up of items shows), a short run is
trained through the CLI; what the bridge says for its test items must be what ``latentbridge eval`` wrote
for them, system by system, from Python and from the shell.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import latentbridge as lb

SHORT = ["train.steps=2", "train.warmup_steps=0", "eval.every=2", "eval.n=6", "eval.dev_n=6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asked") / "run"
    env = {**os.environ, "LATENTBRIDGE_CACHE_DIR": str(folder.parent / "cache")}
    done = subprocess.run([sys.executable, "-m", "latentbridge", "run", "answer_softplus", *SHORT, f"run_dir={folder}"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (folder / "eval_samples_test_step_2.jsonl").read_text().splitlines()]
    return folder, records, env


def test_generate_gives_what_the_evaluation_wrote(run):
    folder, records, _ = run
    bridge = lb.load_bridge(folder)
    assert len({r["bridged_full"] for r in records}) > 1  # the items' answers differ: a mix-up would show
    items = bridge.task.examples("test")[: len(records)]
    for system in ("bridged", "target", "relay", "shuffled"):
        assert bridge.generate(items, system=system) == [r[f"{system}_full"] for r in records], system
    # plain question strings: the same answers (the bridged system reads no per-item seed)
    assert bridge.generate([r["question"] for r in records]) == [r["bridged_full"] for r in records]
    assert bridge.generate(list(reversed(items))) == [r["bridged_full"] for r in reversed(records)]


def test_message_and_score(run):
    folder, records, _ = run
    bridge = lb.load_bridge(folder, step="final")
    message = bridge.message([records[0]["question"], records[1]["question"]])
    assert message.kind == "soft_tokens" and message.tokens.shape[0] == 2
    assert not message.tokens[0].equal(message.tokens[1])
    scores = bridge.score(records[0]["question"], [" 12", " 7", " 12"])
    assert len(scores) == 3 and all(math.isfinite(s) and s < 0 for s in scores)
    assert scores[0] == pytest.approx(scores[2]) and scores[0] != pytest.approx(scores[1])
    assert bridge.score(records[0]["question"], [" 12"], system="target") != pytest.approx([scores[0]])


def test_the_shell_gives_the_same_answers(run):
    folder, records, env = run
    questions = "\n".join(r["question"] for r in records[:3]) + "\n"
    done = subprocess.run([sys.executable, "-m", "latentbridge", "generate", str(folder), "-", "--json"], input=questions,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["output"] for d in lines] == [r["bridged_full"] for r in records[:3]]
    assert [d["question"] for d in lines] == [r["question"] for r in records[:3]]
    one = subprocess.run([sys.executable, "-m", "latentbridge", "generate", str(folder), records[0]["question"],
                          "--system", "target"], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and one.stdout.strip() == records[0]["target_full"].strip()


@pytest.mark.parametrize(("args", "line"), [
    (["--system", "nope"], "--system 'nope': unknown"),
    (["--step", "middle"], "step must be 'best' or 'final'"),
])
def test_bad_generate_input_is_one_line(run, args, line):
    folder, _, env = run
    done = subprocess.run([sys.executable, "-m", "latentbridge", "generate", str(folder), "q", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and line in done.stderr and "Traceback" not in done.stderr


def test_load_bridge_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(lb.LatentBridgeError, match="is not a run folder"):
        lb.load_bridge(tmp_path)
