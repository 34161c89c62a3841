"""latentbridge: cross-model latent communication between frozen LLMs.

A small trainable :class:`Translator` turns a frozen source model's hidden states into soft tokens
that a frozen target model reads, placed by an :class:`InjectionMode` and trained by
:class:`Objective` terms on a :class:`Task`. Plugins provide all four through pluggy hooks
(:data:`hookimpl`); see ``latentbridge list-plugins``.
"""

from latentbridge._version import __version__
from latentbridge.api.context import BuildContext, StepContext
from latentbridge.api.hookspecs import hookimpl
from latentbridge.api.injection import InjectionConfig, InjectionMode, TargetText
from latentbridge.api.objective import Objective, ObjectiveConfig
from latentbridge.api.options import option
from latentbridge.api.segments import IGNORE_INDEX, Segment, Soft, TargetInputs, Text
from latentbridge.api.task import Example, Prompt, Task, TaskConfig
from latentbridge.api.translator import Translator, TranslatorConfig
from latentbridge.errors import ConfigError, LatentBridgeError, PluginError, ShapeError

__all__ = [
    "IGNORE_INDEX",
    "BuildContext",
    "ConfigError",
    "Example",
    "InjectionConfig",
    "InjectionMode",
    "LatentBridgeError",
    "Objective",
    "ObjectiveConfig",
    "PluginError",
    "Prompt",
    "Segment",
    "ShapeError",
    "Soft",
    "StepContext",
    "TargetInputs",
    "TargetText",
    "Task",
    "TaskConfig",
    "Text",
    "Translator",
    "TranslatorConfig",
    "__version__",
    "hookimpl",
    "option",
]
