"""The GEOPAK network and its parts: encoder registry, weight resolver, heads, the model and its checkpoints.

Importing this package builds nothing and touches no network; see :func:`create_encoder` and
:class:`GeopakModel`.
"""

from __future__ import annotations

from geopak.model.encoders import (
    ENCODERS,
    Encoder,
    EncoderSpec,
    create_encoder,
    list_encoders,
    register_encoder,
)
from geopak.model.geopak import (
    CheckpointError,
    GeopakConfig,
    GeopakModel,
    GeopakOutput,
    synthetic_cell_table,
)
from geopak.model.heads import PAD_LOGIT
from geopak.model.weights import WeightsError, resolve_weights

__all__ = [
    "ENCODERS",
    "PAD_LOGIT",
    "CheckpointError",
    "Encoder",
    "EncoderSpec",
    "GeopakConfig",
    "GeopakModel",
    "GeopakOutput",
    "WeightsError",
    "create_encoder",
    "list_encoders",
    "register_encoder",
    "resolve_weights",
    "synthetic_cell_table",
]
