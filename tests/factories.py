"""Small builders of valid messages for tests."""

from __future__ import annotations

import numpy as np

from federation.features import FEATURE_NAMES
from federation.messages import Alert, Update
from federation.summary import ModelSummary


def summary(rows: int = 50, seed: int = 0) -> ModelSummary:
    data = np.random.default_rng(seed).random((rows, len(FEATURE_NAMES)))
    return ModelSummary.from_array(FEATURE_NAMES, data)


def update(vehicle_id: str = "veh-0001", round_number: int = 1, seed: int = 0) -> Update:
    """A local release about the public centre that declares no noise: its offset (about
    1.5 whitened units) is within the clip norm it declares."""
    return Update(vehicle_id, round_number, 0, summary(seed=seed), 1.0, 1e-5, 1.0, 1.7e9,
                  clip_norm=4.0)


def alert(vehicle_id: str = "veh-0001") -> Alert:
    return Alert(vehicle_id, 1.7e9, 8.5, 6.0, "cooling", (("coolant_temp_c", 8.5),), 3)
