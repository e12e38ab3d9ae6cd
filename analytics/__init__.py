"""Detection quality: replay labelled fleets through the devices' own code, under each regime.

The contract of the package: a dataset (:mod:`analytics.datasets`) is replayed prequentially
and interleaved (:mod:`analytics.replay`) through the very same vehicle, detector, privacy
mechanism, round and merge code the live system runs; the regimes (local, federated,
federated with privacy noise, centralized, and an offline batch reference in
:mod:`analytics.batch`) see identical streams and schedule; :mod:`analytics.report` gathers
the figures (:mod:`analytics.metrics`, and SKAB's own protocol in :mod:`analytics.skab`) and
:mod:`analytics.plot` draws them. See ``docs/EVALUATION.md``.
"""

from __future__ import annotations

__all__: list[str] = []
