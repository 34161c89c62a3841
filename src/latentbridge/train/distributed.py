"""Moved to :mod:`latentbridge.runtime.distributed`; this name stays an alias of that module (same object), so
code written against the old path keeps working."""

import sys

from latentbridge.runtime import distributed as _moved

sys.modules[__name__] = _moved
