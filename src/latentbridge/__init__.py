"""latentbridge: cross-model latent communication between frozen LLMs.

A small trainable :class:`Translator` turns a frozen source model's hidden states into soft tokens
that a frozen target model reads, placed by an :class:`InjectionMode` and trained by
:class:`Objective` terms on a :class:`Task`. Plugins provide all four through pluggy hooks
(:data:`hookimpl`); see ``latentbridge list-plugins``.
"""

__version__ = "0.1.0"

from .configs import option
from .context import BuildContext, StepContext
from .errors import ConfigError, LatentBridgeError, PluginError, ShapeError
from .hookspecs import hookimpl
from .injection import InjectionConfig, InjectionMode, TargetText
from .layout import TargetInputs
from .objective import Objective, ObjectiveConfig
from .task import Example, Prompt, Task, TaskConfig
from .translator import Translator, TranslatorConfig

__all__ = [
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
    "ShapeError",
    "StepContext",
    "TargetInputs",
    "TargetText",
    "Task",
    "TaskConfig",
    "Translator",
    "TranslatorConfig",
    "hookimpl",
    "option",
]
