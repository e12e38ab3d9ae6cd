"""Warm-engine physics of many simulated vehicles at once: one array per state variable.

Speed follows the driving cycle's target with first-order dynamics; speed and gear give engine
speed; acceleration, drag, rolling resistance and road grade give engine load; first-order lags
give the temperatures. A fault's severity bends the physics of its subsystem.

The formulas are written once, over *lanes*: one number per vehicle, an array across many
vehicles or, for a vehicle alone, a plain float (a Python float operation costs about a
twentieth of a NumPy call on an array of one). Decisions (gear, braking to a stop, clamps)
take only arithmetic, which is the same IEEE operation either way, so they are the same
decisions; NumPy's exponentials and powers can differ from :mod:`math` in the last bit, so a
vehicle reads alone as in a fleet to about 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np

from devices.sim.faults import FaultMode
from devices.sim.profiles import DAY_S, RAD_S_PER_RPM, VehicleProfile

__all__ = ["NOISE_CHANNELS", "EnginePhysics"]

_GRAVITY_MS2 = 9.81
_HALF_AIR_DENSITY_KGM3 = 0.6
_DRIVELINE_EFFICIENCY = 0.9
# Per step: the foot's wobble, the road's grade, the weather, then one per sensor channel.
NOISE_CHANNELS = 12
_MODE = {mode: row for row, mode in enumerate(FaultMode)}

Lanes: TypeAlias = Any
"""One float per vehicle: a float for one vehicle, an array of floats (or of bools) for many."""


class _Many:
    """Lanes as arrays across vehicles."""

    minimum, maximum, where = np.minimum, np.maximum, np.where
    exp, sin, tanh = np.exp, np.sin, np.tanh

    @staticmethod
    def lanes(values: Sequence[float] | np.ndarray) -> Lanes:
        """Values with the vehicles on their last axis, as lanes (rows of lanes for 2-D)."""
        return np.asarray(values, dtype=float)


class _One:
    """Lanes as plain floats: one vehicle, stepped with :mod:`math` as one would by hand."""

    minimum, maximum = min, max
    exp, sin, tanh = math.exp, math.sin, math.tanh

    @staticmethod
    def where(condition: bool, yes: float, no: float) -> float:
        return yes if condition else no

    @staticmethod
    def lanes(values: Sequence[float] | np.ndarray) -> Lanes:
        return np.asarray(values, dtype=float)[..., 0].tolist()


class EnginePhysics:
    """The physical state of many vehicles, stepped together.

    Parameters
    ----------
    profiles
        One profile per vehicle.
    period_s
        Each vehicle's simulated seconds per step.

    Examples
    --------
    >>> profile = VehicleProfile.draw(np.random.default_rng(0))
    >>> physics = EnginePhysics([profile], np.ones(1))
    >>> quiet, healthy = np.zeros((NOISE_CHANNELS, 1)), np.zeros((len(FaultMode), 1))
    >>> for t_s in range(60):
    ...     channels = physics.step(np.full(1, float(t_s)), np.full(1, 50.0), quiet, healthy)
    >>> channels[:3, 0].round(1)  # engine rpm, speed in km/h, load in %
    array([1204.4,   49.7,   40.9])
    """

    def __init__(self, profiles: Sequence[VehicleProfile], period_s: np.ndarray) -> None:
        self._kit: Any = _One if len(profiles) == 1 else _Many

        def column(name: str) -> Lanes:
            return self._kit.lanes([getattr(p, name) for p in profiles])

        def rows(table: Sequence[Sequence[float]] | np.ndarray) -> Lanes:  # a row per vehicle
            return self._kit.lanes(np.asarray(table, dtype=float).T)

        self._idle_rpm, self._mass_kg = column("idle_rpm"), column("mass_kg")
        self._drag_area_m2, self._rolling_coeff = column("drag_area_m2"), column("rolling_coeff")
        self._max_torque_nm, self._accel_ms2 = column("max_torque_nm"), column("accel_ms2")
        self._lug_rpm, self._shift_rpm = column("lug_rpm"), column("shift_rpm")
        self._idle_load_pct, self._thermostat_c = column("idle_load_pct"), column("thermostat_c")
        self._ambient_mean_c, self._ambient_swing_c = (column("ambient_mean_c"),
                                                       column("ambient_swing_c"))
        self._ambient_phase_s, self._heat_soak_c = column("ambient_phase_s"), column("heat_soak_c")
        self._relief_kpa, self._charge_v = column("relief_kpa"), column("charge_v")
        # At idle, per (krpm)^1.5 and per (speed / 100 km/h)^2.
        self._vibration_scale_g = rows([p.vibration_g for p in profiles])
        # Top gear first; a vehicle with fewer gears than another has NaN ratios: never chosen.
        width = max(len(p.gear_rpm_per_kmh) for p in profiles)
        self._gear_rpm_per_kmh = rows([
            p.gear_rpm_per_kmh + (math.nan,) * (width - len(p.gear_rpm_per_kmh))
            for p in profiles])
        self._period_s = self._kit.lanes(period_s)
        self._rates = rows([_rates(p, dt_s) for p, dt_s in zip(
            profiles, np.asarray(period_s, dtype=float).tolist(), strict=True)])
        self._speed_kmh, self._wobble_ms2, self._grade, self._weather_c = rows(
            np.zeros((len(profiles), 4)))
        idle = rows(np.zeros((len(profiles), len(FaultMode))))
        at_start_s = self._kit.lanes(np.zeros(len(profiles)))
        self._coolant_c, self._oil_c, self._intake_c = self._thermal_targets(
            self._idle_load_pct / 100.0, self._ambient_c(at_start_s), idle)

    def step(self, t_s: np.ndarray, target_kmh: np.ndarray, noise: np.ndarray,
             severity: np.ndarray) -> np.ndarray:
        """Advance one step towards ``target_kmh``; return the sensor channels, ``(9, N)``.

        ``t_s`` is each vehicle's simulated time at this step, ``noise`` its standard normals
        (:data:`NOISE_CHANNELS` rows) and ``severity`` each fault mode's severity (one row per
        :class:`~devices.sim.faults.FaultMode`, in its order). Channels come in the order of
        :data:`federation.features.FEATURE_NAMES`.
        """
        lanes = self._kit.lanes
        channels = self._advance(lanes(t_s), lanes(target_kmh), lanes(noise), lanes(severity))
        return np.array(channels, dtype=float).reshape(len(channels), -1)

    def _advance(self, t_s: Lanes, target_kmh: Lanes, noise: Lanes,
                 severity: Lanes) -> tuple[Lanes, ...]:
        accel_ms2 = self._move(target_kmh, noise[0], noise[1])
        rpm, load_pct = self._engine(accel_ms2)
        weather_keep, weather_kick = self._rates[9:11]
        self._weather_c = self._weather_c * weather_keep + noise[2] * weather_kick
        ambient_c = self._ambient_c(t_s)
        self._warm(load_pct / 100.0, ambient_c, severity)
        return self._measure(rpm, load_pct, ambient_c, noise, severity)

    def _move(self, target_kmh: Lanes, wobble_noise: Lanes, grade_noise: Lanes) -> Lanes:
        """Follow the target speed with first-order dynamics; return the acceleration."""
        speed_gain, dv_up_kmh, dv_down_kmh, dv_brake_kmh, ms2_to_dv_kmh = self._rates[:5]
        wobble_keep, wobble_kick, grade_keep, grade_kick = self._rates[5:9]
        v_kmh = self._speed_kmh
        error_kmh = target_kmh - v_kmh
        dv_kmh = error_kmh * speed_gain
        # Drivers brake to a standstill firmly, not along an ever slower exponential tail.
        braking_kmh = self._kit.maximum(error_kmh, self._kit.minimum(dv_kmh, -dv_brake_kmh))
        dv_kmh = self._kit.where(error_kmh < 0.0, braking_kmh, dv_kmh)
        dv_kmh = self._kit.minimum(dv_up_kmh, self._kit.maximum(-dv_down_kmh, dv_kmh))
        # The driver's foot wobbles smoothly, so the acceleration noise is coloured, not white.
        self._wobble_ms2 = self._wobble_ms2 * wobble_keep + wobble_noise * wobble_kick
        moving = (target_kmh > 0.0) | (v_kmh > 0.0)
        dv_kmh = self._kit.where(moving, dv_kmh + self._wobble_ms2 * ms2_to_dv_kmh, dv_kmh)
        new_kmh = v_kmh + dv_kmh
        # The brakes hold a vehicle that has (nearly) stopped for a stop.
        held = (new_kmh < 0.0) | ((target_kmh == 0.0) & (new_kmh < 0.5))
        self._speed_kmh = self._kit.where(held, 0.0, new_kmh)
        self._grade = self._grade * grade_keep + grade_noise * grade_kick
        return (self._speed_kmh - v_kmh) / (3.6 * self._period_s)

    def _engine(self, accel_ms2: Lanes) -> tuple[Lanes, Lanes]:
        """Engine rpm from speed and gear; load from the torque the wheels ask for."""
        v_kmh = self._speed_kmh
        eagerness = self._kit.minimum(1.0, self._kit.maximum(0.0, accel_ms2 / self._accel_ms2))
        aim_rpm = self._lug_rpm + (self._shift_rpm - self._lug_rpm) * eagerness
        rpm = self._kit.maximum(self._idle_rpm, v_kmh * self._gear_ratio(v_kmh, aim_rpm))
        v_ms = v_kmh / 3.6
        force_n = (self._mass_kg * (accel_ms2 + _GRAVITY_MS2 * (self._rolling_coeff + self._grade))
                   + _HALF_AIR_DENSITY_KGM3 * self._drag_area_m2 * v_ms * v_ms)
        torque_nm = force_n * v_ms / (rpm * RAD_S_PER_RPM * _DRIVELINE_EFFICIENCY)
        load_pct = self._idle_load_pct + 100.0 * torque_nm / self._max_torque_nm
        return rpm, self._kit.minimum(100.0, self._kit.maximum(0.0, load_pct))

    def _ambient_c(self, t_s: Lanes) -> Lanes:
        daily_c = self._ambient_swing_c * self._kit.sin(
            2.0 * math.pi * (t_s + self._ambient_phase_s) / DAY_S)
        return self._ambient_mean_c + daily_c + self._weather_c

    def _thermal_targets(self, load_frac: Lanes, ambient_c: Lanes,
                         severity: Lanes) -> tuple[Lanes, Lanes, Lanes]:
        """Where coolant, oil and intake air temperatures would settle at this operating point."""
        heat_c = self._kit.maximum(0.0, ambient_c - 20.0)
        lost_cooling_c = 18.0 + 12.0 * load_frac + 0.3 * self._kit.maximum(0.0, ambient_c - 10.0)
        coolant_c = (self._thermostat_c + 5.0 * load_frac + 0.15 * heat_c
                     + severity[_MODE[FaultMode.COOLING_DEGRADATION]] * lost_cooling_c)
        # The oil has a cooler of its own here, so a cooling fault stays in its subsystem.
        oil_c = self._thermostat_c + 8.0 + 20.0 * load_frac + 0.2 * heat_c
        lost_intercooling_c = 15.0 + 25.0 * load_frac
        intake_c = (ambient_c + 4.0 + 10.0 * load_frac
                    + self._heat_soak_c * self._kit.exp(-self._speed_kmh / 35.0)
                    + severity[_MODE[FaultMode.INTERCOOLER_FOULING]] * lost_intercooling_c)
        return coolant_c, oil_c, intake_c

    def _warm(self, load_frac: Lanes, ambient_c: Lanes, severity: Lanes) -> None:
        coolant_c, oil_c, intake_c = self._thermal_targets(load_frac, ambient_c, severity)
        coolant_gain, oil_gain, intake_gain = self._rates[11:14]
        self._coolant_c = self._coolant_c + (coolant_c - self._coolant_c) * coolant_gain
        self._oil_c = self._oil_c + (oil_c - self._oil_c) * oil_gain
        self._intake_c = self._intake_c + (intake_c - self._intake_c) * intake_gain

    def _oil_pressure_kpa(self, rpm: Lanes, severity: Lanes) -> Lanes:
        """Pump pressure rises with rpm up to the relief valve; thinner hot oil gives less."""
        viscosity = self._kit.exp(-0.01 * (self._oil_c - 100.0))
        healthy_kpa = self._relief_kpa * self._kit.tanh(rpm / (3.2 * self._idle_rpm) * viscosity)
        return healthy_kpa * (1.0 - 0.55 * severity[_MODE[FaultMode.OIL_PRESSURE_LOSS]])

    def _battery_v(self, rpm: Lanes, ambient_c: Lanes, severity: Lanes) -> Lanes:
        """The regulator's setpoint, temperature-compensated, sagging a little at idle."""
        healthy_v = (self._charge_v - 0.004 * (ambient_c - 25.0)
                     - 0.12 * self._kit.exp(-(rpm - self._idle_rpm) / 400.0))
        return healthy_v + severity[_MODE[FaultMode.CHARGING_FAILURE]] * (12.0 - healthy_v)

    def _vibration_g(self, rpm: Lanes, severity: Lanes) -> Lanes:
        idle_g, engine_g, road_g = self._vibration_scale_g
        engine_g = engine_g * (rpm / 1000.0) ** 1.5
        road_g = road_g * (self._speed_kmh / 100.0) ** 2
        wear = severity[_MODE[FaultMode.BEARING_WEAR]]
        return idle_g + engine_g * (1.0 + 3.0 * wear) + road_g + 0.05 * wear

    def _measure(self, rpm: Lanes, load_pct: Lanes, ambient_c: Lanes,
                 noise: Lanes, severity: Lanes) -> tuple[Lanes, ...]:
        """The sensor readings: true values plus each sensor's measurement noise."""
        e_rpm, e_speed, e_load, e_air, e_coolant, e_oil, e_battery, e_vib, e_intake = noise[3:]
        speed_kmh, kit = self._speed_kmh, self._kit
        return (
            rpm + 12.0 * e_rpm,
            kit.where(speed_kmh != 0.0, kit.maximum(0.0, speed_kmh + 0.3 * e_speed), 0.0),
            kit.minimum(100.0, kit.maximum(0.0, load_pct + 1.5 * e_load)),
            ambient_c + 0.2 * e_air,
            self._coolant_c + 0.3 * e_coolant,
            self._oil_pressure_kpa(rpm, severity) + 4.0 * e_oil,
            self._battery_v(rpm, ambient_c, severity) + 0.03 * e_battery,
            kit.maximum(0.0, self._vibration_g(rpm, severity) + 0.012 * e_vib),
            self._intake_c + 0.4 * e_intake,
        )

    def _gear_ratio(self, v_kmh: Lanes, aim_rpm: Lanes) -> Lanes:
        """The lowest gear that keeps the engine below the rpm the driver is aiming for.

        Going up the ratios, the first one that would take the engine past ``aim_rpm`` ends
        the search; the one before it is chosen (the top gear when even that one would).
        """
        chosen, searching = self._gear_rpm_per_kmh[0], True
        for ratio in self._gear_rpm_per_kmh:
            searching = searching & (v_kmh * ratio <= aim_rpm)
            chosen = self._kit.where(searching, ratio, chosen)
        return chosen


def _rates(p: VehicleProfile, dt_s: float) -> tuple[float, ...]:
    """Per-step gains of the first-order dynamics, exact for any sample period.

    Computed once per vehicle with :mod:`math`, in the order :class:`EnginePhysics` unpacks.
    """
    dv_down_kmh = p.decel_ms2 * 3.6 * dt_s
    return (
        -math.expm1(-dt_s / p.speed_tau_s), p.accel_ms2 * 3.6 * dt_s, dv_down_kmh,
        0.3 * dv_down_kmh, 3.6 * dt_s,
        *_ou_rates(dt_s, tau_s=5.0, std=0.06),  # the foot's wobble
        *_ou_rates(dt_s, tau_s=120.0, std=0.02),  # the road's grade
        *_ou_rates(dt_s, tau_s=1800.0, std=1.0),  # the weather
        -math.expm1(-dt_s / 90.0), -math.expm1(-dt_s / 300.0), -math.expm1(-dt_s / 45.0),
    )


def _ou_rates(dt_s: float, tau_s: float, std: float) -> tuple[float, float]:
    """Per-step decay and kick of an Ornstein-Uhlenbeck process with stationary ``std``."""
    keep = math.exp(-dt_s / tau_s)
    return keep, std * math.sqrt(1.0 - keep * keep)
