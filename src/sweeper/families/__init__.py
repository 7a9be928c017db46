"""Architecture families: each module builds one kind of model from a params dict.

A family module has `DEFAULTS` (its own parameters and their default values) and
`build(params, input_shape, n_classes) -> keras.Model`; the model takes raw uint8 pixels and
ends in a softmax. To add a family, write a module here and add it to `FAMILIES`.
"""

from __future__ import annotations

from types import ModuleType

from sweeper.errors import SweeperError
from sweeper.families import cnn, cnn_bn, mlp, transfer

FAMILIES: dict[str, ModuleType] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn_bn": cnn_bn,
    "transfer": transfer,
}

__all__ = ["FAMILIES", "get"]


def get(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise SweeperError(f"Unknown family {name!r}. Known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
