"""Moved to :mod:`latentbridge.runtime.precision`; this name stays an alias of that module (same object), so
code written against the old path keeps working."""

import sys

from latentbridge.runtime import precision as _moved

sys.modules[__name__] = _moved
