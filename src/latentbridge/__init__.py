"""latentbridge: cross-model latent communication between frozen LLMs.

A small trainable :class:`Translator` turns a frozen source model's hidden states into soft tokens
that a frozen target model reads, placed by an :class:`InjectionMode` and trained by
:class:`Objective` terms on a :class:`Task`. Plugins provide all four through pluggy hooks
(:data:`hookimpl`); see ``latentbridge list-plugins``.

Everything the CLI does is a library call too (imported on first use)::

    import latentbridge as lb
    result = lb.train_recipe("answer_softplus", ["train.steps=50"], run_dir="runs/demo")
    lb.evaluate_run("runs/demo", step="final")
"""

from latentbridge._version import __version__
from latentbridge.api.context import BuildContext, StepContext
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.injection import InjectionConfig, InjectionMode, TargetText
from latentbridge.api.messages import (
    ActivationPatch,
    KVFusion,
    KVPrefix,
    KVShare,
    Message,
    SoftTokens,
    SourceStates,
)
from latentbridge.api.objective import Objective, ObjectiveConfig
from latentbridge.api.options import option
from latentbridge.api.segments import IGNORE_INDEX, Segment, Soft, TargetInputs, Text
from latentbridge.api.system import System, SystemConfig
from latentbridge.api.task import ContextTask, ContextTaskConfig, Example, Prompt, Task, TaskConfig
from latentbridge.api.translator import KVGeometryConfig, SoftTokenConfig, Translator, TranslatorConfig
from latentbridge.errors import ConfigError, LatentBridgeError, PluginError, ShapeError

# the library: what each command does, as a function (imported on first use; see __getattr__)
_LIBRARY = {
    "load_recipe": "latentbridge.config.recipe",
    "train_recipe": "latentbridge.train.jobs",
    "evaluate_run": "latentbridge.eval.jobs",
    "summarize_evals": "latentbridge.eval.jobs",
    "report_runs": "latentbridge.report.document",
    "run_sweep": "latentbridge.train.sweep",
    "load_bridge": "latentbridge.eval.loaded",
}

__all__ = [
    "IGNORE_INDEX",
    "ActivationPatch",
    "BuildContext",
    "ConfigError",
    "Example",
    "InjectionConfig",
    "InjectionMode",
    "KVFusion",
    "KVPrefix",
    "KVShare",
    "LatentBridgeError",
    "Message",
    "Objective",
    "ObjectiveConfig",
    "PluginError",
    "Prompt",
    "Segment",
    "ShapeError",
    "Soft",
    "SoftTokens",
    "SourceStates",
    "StepContext",
    "System",
    "SystemConfig",
    "TargetInputs",
    "TargetText",
    "Task",
    "TaskConfig",
    "ContextTask",
    "ContextTaskConfig",
    "Text",
    "Translator",
    "TranslatorConfig",
    "KVGeometryConfig",
    "SoftTokenConfig",
    "__version__",
    "hookimpl",
    "option",
    *_LIBRARY,
]


def __getattr__(name: str):
    """The library functions, imported on first use (plugins that import latentbridge stay light)."""
    if name in _LIBRARY:
        import importlib

        return getattr(importlib.import_module(_LIBRARY[name]), name)
    raise AttributeError(f"module 'latentbridge' has no attribute {name!r}")
