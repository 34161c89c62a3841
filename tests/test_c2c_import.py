"""``latentbridge c2c import``: a checkpoint in the C2C authors' layout (built here, for the random pair)
becomes a run folder that ``latentbridge eval`` reads, and the imported fusers compute the authors'
formula with the checkpoint's weights; a wrong shape, a missing file or a pickled object is refused in
one line with exit code 2."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from latentbridge.plugins.translators.c2c import C2CConfig, LayerFuser
from typer.testing import CliRunner

from latentbridge.bridge.models import load_frozen
from latentbridge.cli import app

from .test_c2c_reference import reference_branch

cli = CliRunner()
HIDDEN = 16


@pytest.fixture
def checkpoint(random_pair, tmp_path):
    """The authors' layout for llama (sharer, 2 layers) -> mistral (receiver, 3 layers), last_aligned."""
    source, target = (load_frozen(str(random_pair[m]), device="cpu") for m in ("llama", "mistral"))
    s, t = source.kv_geometry, target.kv_geometry
    folder = tmp_path / "final"
    folder.mkdir()
    init = {"source_dim": s["head_dim"], "target_dim": t["head_dim"], "source_num_heads": s["kv_heads"],
            "target_num_heads": t["kv_heads"], "intermediate_dim": HIDDEN, "hidden_dim": HIDDEN, "num_layers": 3,
            "dropout": 0.1, "initial_temperature": 1.0, "final_temperature": 0.001, "anneal_steps": 1929,
            "dtype": {"__type__": "torch.dtype", "value": "bfloat16"}}
    config = C2CConfig(source_layers=s["layers"], source_kv_heads=s["kv_heads"], source_head_dim=s["head_dim"],
                       target_layers=t["layers"], target_kv_heads=t["kv_heads"], target_head_dim=t["head_dim"],
                       hidden=HIDDEN, intermediate=HIDDEN, d_src=8, d_tgt=8)
    offset = s["layers"] - t["layers"]
    layers = {str(r): [[min(max(r + offset, 0), s["layers"] - 1), r]] for r in range(t["layers"])}
    torch.manual_seed(3)
    for r in range(t["layers"]):
        state = {k: torch.randn_like(v) * 0.3 for k, v in LayerFuser(config).state_dict().items()}
        state["key_gate_logit"], state["value_gate_logit"] = torch.tensor(0.5), torch.tensor(0.5 if r else -0.5)
        state["gate_temperature"] = torch.tensor(0.001)
        torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, folder / f"projector_{r}.pt")
        (folder / f"projector_{r}.json").write_text(json.dumps({"class": "C2CProjector", "init_args": init}))
    (folder / "projector_config.json").write_text(json.dumps({"0": {"1": layers}}))
    return folder


def run_import(random_pair, folder, out, *more):
    return cli.invoke(app, ["c2c", "import", str(folder), "--source", str(random_pair["llama"]), "--target",
                            str(random_pair["mistral"]), "--out", str(out), "eval.n=4", "eval.dev_n=4",
                            "eval.batch_size=4", *more])


def test_an_authors_checkpoint_imports_evaluates_and_computes_their_formula(random_pair, checkpoint, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = run_import(random_pair, checkpoint, out)
    assert result.exit_code == 0, result.output
    assert "imported 3 fusers (last_aligned)" in result.output
    evaluated = cli.invoke(app, ["eval", str(out), "eval.n=4"])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((out / "eval_best" / "summary.json").read_text())
    assert summary["systems"]["bridged"]["n"] == 4

    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe

    exp = Experiment.build(load_recipe(out / "recipe.yaml"), translator_dir=str(out / "best"))
    c2c = exp.translator.eval()
    assert c2c.layer_map == [0, 0, 1] and c2c.config.hidden == HIDDEN and c2c.config.anneal_steps == 1929
    c = c2c.config
    g = torch.Generator().manual_seed(0)
    k, v = (torch.randn(2, c.target_kv_heads, 5, c.target_head_dim, generator=g) for _ in range(2))
    sk, sv = (torch.randn(2, c.source_kv_heads, 5, c.source_head_dim, generator=g) for _ in range(2))
    states = type("S", (), {"kv": [(sk, sv)] * 2, "mask": torch.ones(2, 5), "offsets": [[]] * 2, "text": ["", ""]})
    for layer in range(3):
        sd = {key: t.float() for key, t in torch.load(checkpoint / f"projector_{layer}.pt", weights_only=True).items()}
        with torch.no_grad():
            fk, fv = c2c.message(states).fuse(layer, k, v, sk, sv)
        torch.testing.assert_close(fk, reference_branch(sd, "key", k, sk, 1.0, blocks=3), atol=1e-5, rtol=1e-5)
        value_gate = 1.0 if layer else 0.0  # layer 0's value gate logit is -0.5: closed
        torch.testing.assert_close(fv, reference_branch(sd, "value", v, sv, value_gate, blocks=3), atol=1e-5, rtol=1e-5)


def _refused(result, *words):
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert "Traceback" not in result.output
    text = " ".join(lines)
    assert all(w in text for w in words), result.output


def test_a_wrong_shape_is_refused_in_one_line(random_pair, checkpoint, tmp_path):
    state = torch.load(checkpoint / "projector_1.pt", weights_only=True)
    state["key_in.weight"] = torch.zeros(3, 3)
    torch.save(state, checkpoint / "projector_1.pt")
    _refused(run_import(random_pair, checkpoint, tmp_path / "run"), "key_in.weight", "size mismatch")
    assert not (tmp_path / "run").exists()


def test_a_missing_file_is_refused_in_one_line(random_pair, checkpoint, tmp_path):
    (checkpoint / "projector_config.json").unlink()
    _refused(run_import(random_pair, checkpoint, tmp_path / "run"), "projector_config.json is missing")


def test_a_pickled_object_is_refused_in_one_line(random_pair, checkpoint, tmp_path):
    torch.save({"key_in.weight": argparse.Namespace(evil=True)}, checkpoint / "projector_2.pt")
    _refused(run_import(random_pair, checkpoint, tmp_path / "run"), "projector_2.pt", "weights_only=True")
    assert not (tmp_path / "run").exists()
