"""Message sizes: what each evaluation records per item, and the report's accuracy-against-size figure."""

from __future__ import annotations

import json
import types

import pytest

from latentbridge.report.sizes import plot_sizes, size_points

from .helpers import make_experiment
from .test_eval_harness import evaluator


def fake_run(translator, injection, k, seed, accuracy, size, relay=(60, 0.8), target=0.5):
    test = {"systems": {"bridged": {"accuracy": accuracy, "message_bytes": size, "message_tokens": k},
                        "relay": {"accuracy": relay[1], "message_bytes": relay[0], "message_tokens": 15},
                        "target": {"accuracy": target}}}
    return types.SimpleNamespace(recipe={"translator": {"name": translator, "k": k}, "injection": {"name": injection},
                                         "seed": seed}, test_best=test, test_final=None)


def test_points_are_means_over_seeds_per_method_and_size(tmp_path):
    runs = [fake_run("resampler", "soft_only", k, s, acc, 384 * k) for k, s, acc in
            [(4, 0, 0.2), (4, 1, 0.4), (8, 0, 0.5), (8, 1, 0.7)]]
    runs += [fake_run("kv_prefix", "soft_only", 4, 0, 0.1, 9000), fake_run("c2c", "fused_prompt", 8, 0, 0.6, 20000)]
    points = size_points(runs)
    assert points["resampler (soft_only)"] == [(1536.0, pytest.approx(0.3), 2), (3072.0, pytest.approx(0.6), 2)]
    assert points["kv_prefix (soft_only)"] == [(9000.0, 0.1, 1)]
    assert set(points) == {"resampler (soft_only)", "kv_prefix (soft_only)", "c2c (fused_prompt)"}
    assert plot_sizes(runs, tmp_path / "sizes.png") and (tmp_path / "sizes.png").stat().st_size > 1000
    unsized = [types.SimpleNamespace(recipe=r.recipe, test_best={"systems": {"bridged": {"accuracy": 0.5}}},
                                     test_final=None) for r in runs]
    assert size_points(unsized) == {} and not plot_sizes(unsized, tmp_path / "none.png")


def test_each_item_records_the_bytes_of_its_message_and_of_the_relay(random_pair, tmp_path):
    exp = make_experiment(random_pair, "translator.k=3")
    summary = evaluator(exp, tmp_path).evaluate(step=1)
    records = [json.loads(x) for x in (tmp_path / "eval_samples_test_step_1.jsonl").read_text().splitlines()]
    d = exp.bridge.target.hidden_size
    assert all(r["bridged_message_bytes"] == 3 * d * 4 and r["bridged_message_tokens"] == 3 for r in records)
    for r in records:  # the relay: the UTF-8 bytes of what follows the prompt
        from latentbridge.bridge.solutions import relay_continuation

        prompt = exp.task.prompt(next(e for e in exp.task.examples("test") if e.id == r["id"]))
        text = relay_continuation(prompt, r["source_full"])
        assert r["relay_message_bytes"] == len(text.encode())
        assert r["relay_message_tokens"] == len(exp.bridge.target_encoder.ids(text))
    assert summary["systems"]["bridged"]["message_bytes"] == 3 * d * 4
