"""Injection mode ``after_cache``: the target reads its own prompt after the source's shared cache (KVComm)."""

from __future__ import annotations

from latentbridge import InjectionMode, TargetText, hookimpl
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Text


class AfterCache(InjectionMode):
    """[source's cache][bos][prompt]: a ``kv_share`` message (the ``kvcomm`` translator) is the cache the
    target's own text follows, at the layers it shares."""

    name = "after_cache"
    accepts = ("kv_share",)

    def segments(self, text: TargetText) -> list[Segment]:
        return [Text(text.prefix), Text(text.prompt), *answer_segment(text)]


@hookimpl
def register_injection_modes(register):
    register(AfterCache)
