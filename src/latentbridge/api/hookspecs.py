"""Hook specifications: how a plugin tells latentbridge what it provides.

Each hook receives a ``register`` callback; the plugin calls it once per class it provides::

    from latentbridge import hookimpl

    @hookimpl
    def register_objectives(register):
        register(L2Objective)

The host (``latentbridge.registry``) owns naming: it checks each class, refuses duplicate names (naming
both providers) and records which module and distribution provided what.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "latentbridge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_objectives(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.Objective` subclasses: ``register(MyObjective)``."""


@hookspec
def register_translators(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.Translator` subclasses: ``register(MyTranslator)``."""


@hookspec
def register_injection_modes(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.InjectionMode` subclasses: ``register(MyMode)``."""


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.Task` subclasses: ``register(MyTask)``."""


@hookspec
def register_loggers(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.api.logger.Logger` subclasses (experiment loggers a recipe can name)."""


@hookspec
def register_systems(register: Callable[[type], None]) -> None:
    """Register :class:`latentbridge.System` subclasses (evaluation systems a recipe names in ``eval.systems``)."""


@hookspec
def register_step_quantities(register: Callable[[object], None]) -> None:
    """Register shared step quantities: ``register(StepQuantity(name, compute, help))``; objectives read
    them with ``step.get(name)`` after declaring them in ``needs``."""


@hookspec
def on_run_event(event: object) -> None:
    """Called for every run event (:mod:`latentbridge.api.events`): run started, step ended, evaluation
    progress and end, checkpoint written, message, run ended. Experiment loggers implement it; so may any
    plugin that wants to watch every run."""
