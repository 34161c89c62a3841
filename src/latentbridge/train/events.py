"""The event bus of one run: every consumer gets every event, in the order the consumers were added.

Consumers are objects with an ``on_run_event(event)`` method (the run's loggers, the console display);
plugins installed in the environment that implement the ``on_run_event`` hook (module level, like any
hook) see the same stream after them. A consumer that raises is reported with its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from latentbridge.api.events import RunEvent
from latentbridge.registry.blame import blame


class EventBus:
    def __init__(self, consumers: Iterable[Any] = (), global_hook: Any = None):
        self.consumers: list[Any] = list(consumers)
        self._global_hook = global_hook  # the registry's `on_run_event` hook caller

    def add(self, consumer: Any) -> None:
        self.consumers.append(consumer)

    def emit(self, event: RunEvent) -> None:
        for consumer in self.consumers:
            with blame("logger", getattr(consumer, "name", type(consumer).__name__), consumer):
                consumer.on_run_event(event)
        if self._global_hook is not None:
            for impl in self._global_hook.get_hookimpls():
                with blame("plugin", impl.plugin_name, impl.plugin):
                    impl.function(event=event)
