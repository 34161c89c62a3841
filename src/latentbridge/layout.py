"""Deprecated module, kept for plugins written against it: ``latentbridge.layout`` moved in 0.1's sub-package
split. Its names are here until 0.2, with a ``DeprecationWarning`` on import; import them from their homes:

- ``IGNORE_INDEX``, ``Soft``, ``Text``, ``TargetInputs``: ``latentbridge`` (``latentbridge.api.segments``);
- ``positions_from_mask`` (and ``left_pad``, ``pad_hidden``): ``latentbridge.api.layout``;
- ``assemble``: a message's layout is ``bridge.layout.assemble(rows, soft)`` inside ``Message.target_inputs``.
"""

from __future__ import annotations

import warnings

from latentbridge.api.layout import left_pad, pad_hidden, positions_from_mask
from latentbridge.api.segments import IGNORE_INDEX, Soft, TargetInputs, Text
from latentbridge.bridge.layout import assemble

warnings.warn("latentbridge.layout moved: import Soft, Text, TargetInputs and IGNORE_INDEX from latentbridge, "
              "positions_from_mask, left_pad and pad_hidden from latentbridge.api.layout (this alias goes in 0.2)",
              DeprecationWarning, stacklevel=2)

__all__ = ["IGNORE_INDEX", "Soft", "TargetInputs", "Text", "assemble", "left_pad", "pad_hidden", "positions_from_mask"]
