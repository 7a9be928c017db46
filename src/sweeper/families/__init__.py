"""Architecture families: each module builds one kind of model from complete parameters.

A family module has `build(params, input_shape, n_classes) -> keras.Model`; it may have
`fine_tune(model, params)` for a second phase, and `USES_ALL_CORES = True` where one trial
keeps every CPU core busy (`--workers auto` reads it). The model takes raw uint8 pixels and
ends in a float32 softmax. Its parameters live in `sweeper.schema.FAMILIES`. To add a
family, write a module here, add its parameters to the schema and one line to `FAMILIES`.
"""

from __future__ import annotations

from types import ModuleType

from sweeper.errors import SweeperError
from sweeper.families import cnn, cnn_bn, mlp, resnet, transfer

FAMILIES: dict[str, ModuleType] = {
    "mlp": mlp,
    "cnn": cnn,
    "cnn_bn": cnn_bn,
    "resnet": resnet,
    "transfer": transfer,
}

__all__ = ["FAMILIES", "get", "uses_all_cores"]


def get(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise SweeperError(f"Unknown family {name!r}. Known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def uses_all_cores(names: list[str]) -> bool:
    """Whether a trial of any of these families keeps every CPU core busy on its own."""
    return any(getattr(get(name), "USES_ALL_CORES", False) for name in names)
