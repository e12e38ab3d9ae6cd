"""When a new global model is worth sending down to every vehicle.

Every merged round makes a new model version, and the gateway stores each. Sending each to
every vehicle costs a model's bytes times the fleet, every round, whether or not it would
change what a vehicle detects. So the gateway publishes a new model only when it differs from
the last one it published by at least ``MODEL_CHANGE`` in the whitened coordinates of that
last one (:mod:`federation.whitening`: the mean's shift in its own standard deviations, and
its covariance's relative change, as one L2 norm), or carries at least ``WEIGHT_CHANGE`` times
the readings, or at most half the privacy noise. A vehicle scores readings in those same
units (standardised residuals, alerting at several standard deviations), so a model nearer
than a tenth of a standard deviation moves no score by more than about a tenth: a change that
does not matter to an alert, and that the next model sent carries anyway.
"""

from __future__ import annotations

import numpy as np

from federation.messages import GlobalModel
from federation.whitening import Whitening

__all__ = ["MODEL_CHANGE", "WEIGHT_CHANGE", "model_change", "worth_sending"]

MODEL_CHANGE = 0.1  # whitened units of the last model sent
WEIGHT_CHANGE = 2.0  # the readings a model counts for, over the last one's


def model_change(new: GlobalModel, sent: GlobalModel) -> float:
    """How far ``new`` is from ``sent``, in ``sent``'s whitened units (0: the same model).

    >>> from federation.features import FEATURE_NAMES
    >>> from federation.summary import ModelSummary
    >>> summary = ModelSummary(FEATURE_NAMES, 900.0, np.full(9, 0.5), np.eye(9) * 0.01)
    >>> sent = GlobalModel(4, 4, 10, summary, 0.0)
    >>> shifted = ModelSummary(FEATURE_NAMES, 950.0, np.r_[0.52, np.full(8, 0.5)], summary.cov)
    >>> round(model_change(GlobalModel(5, 5, 10, shifted, 0.0), sent), 3)  # 0.2 std, and its square
    0.204
    """
    return float(np.linalg.norm(Whitening(sent.summary).pack(new.summary)))


def worth_sending(new: GlobalModel, sent: GlobalModel | None) -> bool:
    """Whether vehicles should get ``new``, given ``sent``, the last model they got (see the
    module).

    >>> from federation.features import FEATURE_NAMES
    >>> from federation.summary import ModelSummary
    >>> summary = ModelSummary(FEATURE_NAMES, 900.0, np.full(9, 0.5), np.eye(9) * 0.01)
    >>> sent = GlobalModel(4, 4, 10, summary, 0.0)
    >>> worth_sending(GlobalModel(5, 5, 10, summary.weighted(1000.0), 0.0), sent)
    False
    >>> worth_sending(GlobalModel(5, 5, 10, summary.weighted(1800.0), 0.0), sent)
    True
    """
    if sent is None or new.summary.features != sent.summary.features:
        return True
    if new.summary.n >= WEIGHT_CHANGE * sent.summary.n or new.noise_std <= sent.noise_std / 2 < (
            sent.noise_std):
        return True
    return model_change(new, sent) >= MODEL_CHANGE
