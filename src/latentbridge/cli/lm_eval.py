"""``latentbridge lm-eval``: lm-evaluation-harness's command line with the ``latentbridge`` model registered."""

from __future__ import annotations

import sys

import typer

from latentbridge.cli.app import app
from latentbridge.errors import LatentBridgeError


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                          "help_option_names": []})
def lm_eval_command(ctx: typer.Context) -> None:
    """Run lm-eval with the model class 'latentbridge' (a run folder as a model); every argument goes to lm-eval.

    latentbridge lm-eval --model latentbridge --model_args run=RUN_DIR,system=bridged,step=best --tasks TASKS

    system: target, source or bridged; step: best or final. lm-eval's tasks download their data unless
    they read local files (see the README). Needs the extra: pip install "latentbridge[lm-eval]".
    """
    try:
        import lm_eval.__main__ as harness

        import latentbridge.eval.lm_eval_model  # noqa: F401  (registers the model "latentbridge")
    except ImportError:
        raise LatentBridgeError('latentbridge lm-eval needs lm-evaluation-harness: pip install "latentbridge[lm-eval]"') from None
    argv = sys.argv
    sys.argv = ["lm_eval", *ctx.args]
    try:
        harness.cli_evaluate()
    finally:
        sys.argv = argv
