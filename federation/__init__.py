"""What vehicles and the gateway agree on: the contract both sides import.

- :mod:`federation.topics` — the MQTT topic tree under ``fleet/v1/``;
- :mod:`federation.messages` — typed, versioned messages and their one validating codec;
- :mod:`federation.features` — feature schemas: channels, fleet-wide limits and roles;
- :mod:`federation.summary` — the model summary and its exact merge rule;
- :mod:`federation.privacy` — clipping, the Gaussian mechanism and privacy accounting;
- :mod:`federation.transport` — the MQTT URL and a configured client.
- :mod:`federation.secagg` — secure aggregation: the gateway learns only the round's sum.

This package imports no component of fedfleet (devices, gateway, broker, CLI).
"""

from federation.features import (
    FEATURE_NAMES,
    FEATURES,
    HEALTH_FEATURES,
    VEHICLE_SCHEMA,
    Feature,
    Schema,
    SchemaError,
    load_schema,
)
from federation.messages import (
    Alert,
    GlobalModel,
    MessageError,
    RoundOpen,
    Status,
    Update,
    decode,
    encode,
)
from federation.summary import ModelSummary

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "HEALTH_FEATURES",
    "VEHICLE_SCHEMA",
    "Alert",
    "Feature",
    "GlobalModel",
    "MessageError",
    "ModelSummary",
    "RoundOpen",
    "Schema",
    "SchemaError",
    "Status",
    "Update",
    "decode",
    "encode",
    "load_schema",
]
