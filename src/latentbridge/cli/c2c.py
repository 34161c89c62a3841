"""``latentbridge c2c import``: the C2C authors' released fusers as a run folder that ``eval`` reads."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from latentbridge.cli.app import app, console
from latentbridge.errors import LatentBridgeError

c2c_app = typer.Typer(no_args_is_help=True, help="C2C (Cache-to-Cache): the authors' released fusers.")
app.add_typer(c2c_app, name="c2c")


@c2c_app.command("import")
def import_fuser(
    folder: Path = typer.Argument(..., help="A C2C checkpoint folder (projector_*.json, projector_*.pt, "
                                            "projector_config.json), e.g. their final/."),
    source: str = typer.Option(..., "--source", help="The sharer model folder it was trained with."),
    target: str = typer.Option(..., "--target", help="The receiver model folder it was trained with."),
    out: Path = typer.Option(..., "--out", help="The run folder to write (must not exist)."),
    recipe: str = typer.Option("c2c_fusion", "--recipe", help="The recipe the run folder evaluates with (its "
                                                             "task, prompts and eval settings)."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides, e.g. task=gsm8k task.data_dir=/data/gsm8k."),
) -> None:
    """Write RUN_DIR from an authors' checkpoint: `latentbridge eval RUN_DIR` then evaluates their fuser."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import load_recipe
    from latentbridge.io.c2c_reference import read_reference
    from latentbridge.io.card import bridge_card, write_card
    from latentbridge.io.weights import save_translator

    if out.exists():
        raise LatentBridgeError(f"{out} exists: the import writes a new run folder")
    ref = read_reference(folder)
    settings = [f"translator.{k}={v}" for k, v in ref.settings.items()]
    run = load_recipe(recipe, [f"models.source={source}", f"models.target={target}", "translator=c2c",
                               "injection=fused_prompt", *settings, *(overrides or []), f"run_dir={out}"])
    exp = Experiment.build(run)
    c = exp.translator.config
    for key, value in ref.geometry.items():
        if getattr(c, key) != value:
            raise LatentBridgeError(f"{folder}: the fusers were made for {key} {value}, but {source} -> {target} "
                                    f"has {getattr(c, key)}")
    offset = c.source_layers - c.target_layers
    maps = {"last_aligned": {t: min(max(t + offset, 0), c.source_layers - 1) for t in range(c.target_layers)},
            "terminal": {t: t + offset for t in range(c.target_layers) if t + offset >= 0}}
    mapping = next((name for name, layers in maps.items() if layers == ref.layer_map), None)
    if mapping is None:
        raise LatentBridgeError(f"{folder}: its layer map {ref.layer_map} is neither last_aligned nor terminal for "
                                f"{c.source_layers} -> {c.target_layers} layers")
    if mapping != c.layer_map:
        run = load_recipe(recipe, [*run.overrides, f"translator.layer_map={mapping}"])
        exp = Experiment.build(run)
    try:
        missing, unexpected = exp.translator.load_state_dict(ref.state, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        line = next((x.strip() for x in str(exc).splitlines() if "size mismatch" in x), str(exc).splitlines()[0])
        raise LatentBridgeError(f"{folder}: {line}") from None
    if missing or unexpected:
        raise LatentBridgeError(f"{folder}: the fusers do not fit (missing: {sorted(missing)[:4]}, "
                                f"unexpected: {sorted(unexpected)[:4]})")
    out.mkdir(parents=True)
    (out / "recipe.yaml").write_text(run.to_yaml())
    card = bridge_card(exp)
    for where in (out, out / "best"):
        save_translator(exp.translator, where, extra={"step": 0, "imported_from": str(folder)})
        write_card(where, card)
    console.print(f"imported {len(ref.layer_map)} fusers ({mapping}) from {escape(str(folder))} into "
                  f"{escape(str(out))}; evaluate with: latentbridge eval {escape(str(out))}")
