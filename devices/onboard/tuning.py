"""How a device's detector, alerts and learning gate are set for the cadence of its readings.

The same model runs everywhere; what changes between a car read every second and a turbofan
read once per flight cycle is how many readings make a baseline, how long the alert chart
remembers, and where it alarms. Each preset below was chosen by replaying labelled data
through the live code with ``fedfleet evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devices.onboard.alerts import AlertPolicy
from devices.onboard.detector import FleetGaussian
from federation.features import Schema

__all__ = ["ENGINE_CYCLES", "TEST_RIG", "VEHICLE", "Tuning"]


@dataclass(frozen=True, slots=True)
class Tuning:
    """The settings of one device's detector, alert policy and learning gate.

    Parameters
    ----------
    prior_readings
        The most readings the fleet's model counts for in a device's model.
    min_readings
        Readings a model needs before it scores.
    refresh_every
        Readings between recomputations of the precision matrix.
    burn_in_readings
        A device's first readings, learned whatever their level (its own baseline).
    own_mean_after
        Readings after which the fleet's model is centred on the device's own mean
        (:class:`devices.onboard.detector.FleetGaussian`; 0: never).
    own_mean_limit
        The own mean is used only while its standardised residual under the fleet's model is
        below this (``inf``: always).
    prior_noise_scale
        The privacy noise (relative, per whitened coordinate) at which the fleet's model counts
        half (:func:`devices.onboard.detector.prior_weight`).
    learn_below
        After the burn-in, a reading is learned only while every subsystem's level is below.
    alpha
        EWMA weight of the newest residual in the alert chart.
    threshold
        The alert level.
    cooldown_s
        Quiet time of a subsystem after an alert (reading time).
    calibrate_readings
        If positive, the threshold is calibrated on the device's first this many readings
        (see :class:`devices.onboard.alerts.AlertPolicy`); ``threshold`` holds until then.
    calibrate_factor
        The calibrated threshold over the highest level of those readings.
    first_release_readings, release_growth
        With privacy, a device releases its summary once it has learned this many readings,
        then ``release_growth`` times as many, and so on (:class:`devices.onboard.vehicle.Vehicle`).

    Examples
    --------
    >>> from federation.features import VEHICLE_SCHEMA
    >>> ENGINE_CYCLES.policy(VEHICLE_SCHEMA).alpha, VEHICLE.detector(VEHICLE_SCHEMA).prior_readings
    (0.2, 3600.0)
    """

    prior_readings: float = 3600.0
    min_readings: int = 3000
    refresh_every: int = 120
    burn_in_readings: int = 600
    own_mean_after: int = 60
    own_mean_limit: float = 2.0
    prior_noise_scale: float = 0.3
    learn_below: float = 1.5
    alpha: float = 0.02
    threshold: float = 4.0
    cooldown_s: float = 1800.0
    calibrate_readings: int = 0
    calibrate_factor: float = 1.0
    first_release_readings: int = 300
    release_growth: float = 3.0

    def detector(self, schema: Schema) -> FleetGaussian:
        return FleetGaussian(schema, prior_readings=self.prior_readings,
                             refresh_every=self.refresh_every, min_readings=self.min_readings,
                             own_mean_after=self.own_mean_after,
                             own_mean_limit=self.own_mean_limit,
                             prior_noise_scale=self.prior_noise_scale)

    def policy(self, schema: Schema) -> AlertPolicy:
        return AlertPolicy(self.threshold, self.alpha, self.cooldown_s, schema=schema,
                           calibrate_readings=self.calibrate_readings,
                           calibrate_factor=self.calibrate_factor)

    def vehicle_kwargs(
        self, schema: Schema, detector: FleetGaussian | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of :class:`devices.onboard.vehicle.Vehicle` for this tuning."""
        return {"detector": detector or self.detector(schema), "policy": self.policy(schema),
                "burn_in_readings": self.burn_in_readings, "learn_below": self.learn_below,
                "first_release_readings": self.first_release_readings,
                "release_growth": self.release_growth}

    def releases_within(self, readings: int) -> int:
        """How many private releases a device makes by the time it has learned ``readings``.

        >>> VEHICLE.releases_within(8100), VEHICLE.releases_within(299)
        (4, 0)
        """
        releases, due = 0, float(self.first_release_readings)
        while due <= readings:
            releases, due = releases + 1, due * self.release_growth
        return releases


VEHICLE = Tuning()
"""A road vehicle read once a second (the simulator, OBD-II). Once it holds a minute of its own
readings, the fleet's model is centred on the vehicle's own mean (from the model's next
refresh, at reading 120), as long as that mean is itself normal for the fleet
(``own_mean_limit``). On ``sim:200``, federated then beats local on 33 of 41 faulty vehicles,
and ranks the late vehicles that arrive with a fault at 0.634 over their first 810 readings
(local: 0.333; always centred: 0.404, as the fault becomes the vehicle's normal). A fault that
begins in those 810 readings gains nothing from any setting measured: it does not yet move the
alert level, under the fleet's model or a vehicle's own (PR-AUC 0.211 where the share of
faulty readings is 0.226; see docs/EVALUATION.md and ``python -m benchmarks.cold_start``).
The 600-reading burn-in is how a healthy vehicle too unlike the fleet to be centred learns its
own normal: shorter ones rank worn newcomers higher and cost false alarms (on two simulated
fleets, 200 readings: 1.47 and 3.48 per 1,000 against 1.32 and 0.46)."""

ENGINE_CYCLES = Tuning(prior_readings=400.0, min_readings=30, refresh_every=1,
                       burn_in_readings=30, own_mean_after=0, learn_below=2.0, alpha=0.2,
                       threshold=1.82, cooldown_s=1e9, first_release_readings=30,
                       release_growth=2.0)
"""A machine read once per duty cycle and run for a few hundred (C-MAPSS turbofans). The
fleet's model anchors what a new engine's healthy sensors look like, so it weighs as much
as two engine lives (its own mean alone absorbs early wear: PR-AUC 0.94 instead of 0.97).
Learning stops at level 2 rather than 1.5: the model then follows the engine further, so
its alert level is steadier and the threshold can be lower (median lead 18 -> 20 cycles at
the same false-alarm rate). The threshold keeps false alarms under 1 per 1,000 healthy
cycles: on FD001 0.85, with a median first-alert lead of 20 cycles (1.80: 1.02 and 21;
1.85: 0.57 and 19)."""

TEST_RIG = Tuning(prior_readings=0.0, min_readings=100, refresh_every=10,
                  burn_in_readings=400, own_mean_after=0, learn_below=0.0, alpha=0.05,
                  threshold=1.0, cooldown_s=1e9, calibrate_readings=400, calibrate_factor=1.0,
                  first_release_readings=100)
"""One experiment per set-up of a test rig read once a second (SKAB). Each experiment runs the
rig at a set-up of its own, so another set-up's normal only hides faults: the fleet's model is
not used as a prior, and the first 400 readings (the benchmark's training part) are the
device's baseline, and all it learns, as in the benchmark's protocol: learning on past them
(while the level stays below 1.5) absorbs the slow onsets (F1 0.755 -> 0.773). Measured on SKAB
(protocol F1, pooled PR-AUC): with the fleet's model as a prior of 50 readings, 0.627 and 0.686
centred on the fleet's mean, 0.645 and 0.695 centred on the experiment's own after 60 readings;
of none (each experiment alone), 0.822 and 0.852, with the rig's two temperatures as operating
conditions of its schema. The alarm threshold is the highest level of those 400 healthy
readings (factor 1), a limit set on the training part as a control chart's is: the factor was
chosen on the 16 ``valve1`` experiments alone and holds on the 18 others (see
docs/EVALUATION.md). Before the baseline is complete the threshold is 1."""
