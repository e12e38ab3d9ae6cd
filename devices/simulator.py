"""A seeded vehicle simulator: driving cycles, warm-engine physics and injected faults.

A :class:`SimulatedVehicle` drives a semi-Markov cycle of idling, city stop-and-go and highway
cruising and turns it into the sensor channels of :data:`federation.features.FEATURES` through
smooth physical relationships: speed and gear give engine speed; acceleration, drag, rolling
resistance and road grade give engine load; first-order lags give the temperatures. A
:class:`~devices.faults.FaultSpec` bends the physics of one subsystem as its severity grows.

Everything random comes from generators seeded by ``(seed, vehicle_id)``, and a fault never
changes what is drawn: a faulty vehicle and its healthy twin drive identically and differ only
in the faulty subsystem's channel, and only after the fault's onset.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from devices.driving import DrivingCycle, DrivingState
from devices.faults import FaultMode, FaultSpec, plan_faults
from devices.profiles import DAY_S, RAD_S_PER_RPM, VehicleProfile
from devices.sources import Reading, SensorSource

__all__ = ["DrivingState", "SimulatedVehicle", "VehicleProfile", "make_fleet"]

_GRAVITY_MS2 = 9.81
_HALF_AIR_DENSITY_KGM3 = 0.6
_DRIVELINE_EFFICIENCY = 0.9
_NOISE_PER_STEP = 12
_BLOCK_STEPS = 512


class SimulatedVehicle(SensorSource):
    """A seeded simulated vehicle: a driving cycle, warm-engine physics and an optional fault.

    Parameters
    ----------
    vehicle_id
        The vehicle's id; with ``seed`` it seeds every random draw, so two vehicles differ
        and the same pair gives the same readings on every run and machine.
    seed
        The simulation's seed.
    fault
        The fault to inject, or ``None`` for a healthy vehicle. It changes the physics of its
        subsystem only, and never what is drawn.
    period_s
        Simulated seconds between two readings.
    start_ts_s
        The timestamp of the first reading.

    Attributes
    ----------
    vehicle_id : str
        As given.
    fault : FaultSpec or None
        The injected fault: the ground truth.
    profile : VehicleProfile
        What kind of vehicle this is, where it drives and how.

    Examples
    --------
    >>> car = SimulatedVehicle("veh-0007", seed=42)
    >>> car.profile.kind, car.profile.climate, car.profile.style
    ('car', 'hot', 'normal')
    >>> first = car.read()
    >>> first.ts_s, car.sim_time_s, car.driving_state.value
    (0.0, 1.0, 'idle')
    >>> for name, value in first.values.items():
    ...     print(f"{name:<18} {value:8.2f}")
    engine_rpm           850.44
    vehicle_speed_kmh      0.00
    engine_load_pct       18.73
    ambient_temp_c        27.63
    coolant_temp_c        91.45
    oil_pressure_kpa     146.28
    battery_v             14.05
    vibration_rms_g        0.06
    intake_temp_c         51.48

    Its twin with a failing radiator drives the same way and reads the same until the fault
    sets in, then runs hot:

    >>> fault = FaultSpec(FaultMode.COOLING_DEGRADATION, onset_s=60.0, failure_s=600.0)
    >>> twin = SimulatedVehicle("veh-0007", seed=42, fault=fault)
    >>> twin.read() == first
    True
    >>> for _ in range(1200):
    ...     healthy, faulty = car.read(), twin.read()
    >>> healthy.values["vehicle_speed_kmh"] == faulty.values["vehicle_speed_kmh"]
    True
    >>> round(faulty.values["coolant_temp_c"] - healthy.values["coolant_temp_c"])
    26
    """

    def __init__(
        self,
        vehicle_id: str,
        seed: int,
        fault: FaultSpec | None = None,
        period_s: float = 1.0,
        start_ts_s: float = 0.0,
    ) -> None:
        if not period_s > 0.0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.vehicle_id = vehicle_id
        self.fault = fault
        self.period_s = period_s
        self.start_ts_s = start_ts_s
        profile_seq, driving_seq, noise_seq = np.random.SeedSequence(
            [seed, zlib.crc32(vehicle_id.encode())]).spawn(3)
        self.profile = VehicleProfile.draw(np.random.default_rng(profile_seq))
        self._cycle = DrivingCycle(np.random.default_rng(driving_seq), self.profile)
        self._noise_rng = np.random.default_rng(noise_seq)
        self._noise: list[list[float]] = []
        self._row = _BLOCK_STEPS
        self._steps = 0
        self._severity = dict.fromkeys(FaultMode, 0.0)
        self._set_rates(period_s)
        self._speed_kmh = 0.0
        self._wobble_ms2 = 0.0
        self._grade = 0.0
        self._weather_c = 0.0
        self._coolant_c, self._oil_c, self._intake_c = self._thermal_targets(
            self.profile.idle_load_pct / 100.0, self._ambient_c(0.0))

    @property
    def sim_time_s(self) -> float:
        """Simulated seconds so far: one period per reading."""
        return self._steps * self.period_s

    @property
    def driving_state(self) -> DrivingState:
        """What the vehicle was doing at the last reading."""
        return self._cycle.state

    def read(self) -> Reading:
        """Return the reading at the current simulated time, then advance it by one period."""
        t_s = self._steps * self.period_s
        self._steps += 1
        if self.fault is not None:
            self._severity[self.fault.mode] = self.fault.severity(t_s)
        noise = self._next_noise()
        wobble_noise, grade_noise, weather_noise = noise[0], noise[1], noise[2]
        accel_ms2 = self._move(wobble_noise, grade_noise)
        rpm, load_pct = self._engine(accel_ms2)
        self._weather_c = self._weather_c * self._weather_keep + weather_noise * self._weather_kick
        ambient_c = self._ambient_c(t_s)
        self._warm(load_pct / 100.0, ambient_c)
        return Reading(self.start_ts_s + t_s, self._measure(rpm, load_pct, ambient_c, noise))

    def _set_rates(self, dt_s: float) -> None:
        """Per-step gains of the first-order dynamics, exact for any sample period."""
        p = self.profile
        self._speed_gain = -math.expm1(-dt_s / p.speed_tau_s)
        self._dv_up_kmh = p.accel_ms2 * 3.6 * dt_s
        self._dv_down_kmh = p.decel_ms2 * 3.6 * dt_s
        self._dv_brake_kmh = 0.3 * self._dv_down_kmh
        self._ms2_to_dv_kmh = 3.6 * dt_s
        self._wobble_keep, self._wobble_kick = _ou_rates(dt_s, tau_s=5.0, std=0.06)
        self._grade_keep, self._grade_kick = _ou_rates(dt_s, tau_s=120.0, std=0.02)
        self._weather_keep, self._weather_kick = _ou_rates(dt_s, tau_s=1800.0, std=1.0)
        self._coolant_gain = -math.expm1(-dt_s / 90.0)
        self._oil_gain = -math.expm1(-dt_s / 300.0)
        self._intake_gain = -math.expm1(-dt_s / 45.0)

    def _next_noise(self) -> list[float]:
        if self._row == _BLOCK_STEPS:
            self._noise = self._noise_rng.standard_normal((_BLOCK_STEPS, _NOISE_PER_STEP)).tolist()
            self._row = 0
        self._row += 1
        return self._noise[self._row - 1]

    def _move(self, wobble_noise: float, grade_noise: float) -> float:
        """Follow the target speed with first-order dynamics; return the acceleration."""
        target_kmh = self._cycle.step(self.period_s)
        v_kmh = self._speed_kmh
        error_kmh = target_kmh - v_kmh
        dv_kmh = error_kmh * self._speed_gain
        if error_kmh < 0.0:
            # Drivers brake to a standstill firmly, not along an ever slower exponential tail.
            dv_kmh = max(error_kmh, min(dv_kmh, -self._dv_brake_kmh))
        dv_kmh = min(self._dv_up_kmh, max(-self._dv_down_kmh, dv_kmh))
        # The driver's foot wobbles smoothly, so the acceleration noise is coloured, not white.
        self._wobble_ms2 = self._wobble_ms2 * self._wobble_keep + wobble_noise * self._wobble_kick
        if target_kmh > 0.0 or v_kmh > 0.0:
            dv_kmh += self._wobble_ms2 * self._ms2_to_dv_kmh
        new_kmh = v_kmh + dv_kmh
        # The brakes hold a vehicle that has (nearly) stopped for a stop.
        self._speed_kmh = 0.0 if new_kmh < 0.0 or (target_kmh == 0.0 and new_kmh < 0.5) else new_kmh
        self._grade = self._grade * self._grade_keep + grade_noise * self._grade_kick
        return (self._speed_kmh - v_kmh) / (3.6 * self.period_s)

    def _engine(self, accel_ms2: float) -> tuple[float, float]:
        """Engine rpm from speed and gear; load from the torque the wheels ask for."""
        p = self.profile
        v_kmh = self._speed_kmh
        rpm = max(p.idle_rpm, v_kmh * self._gear_ratio(v_kmh, accel_ms2))
        v_ms = v_kmh / 3.6
        force_n = (p.mass_kg * (accel_ms2 + _GRAVITY_MS2 * (p.rolling_coeff + self._grade))
                   + _HALF_AIR_DENSITY_KGM3 * p.drag_area_m2 * v_ms * v_ms)
        torque_nm = force_n * v_ms / (rpm * RAD_S_PER_RPM * _DRIVELINE_EFFICIENCY)
        return rpm, min(100.0, max(0.0, p.idle_load_pct + 100.0 * torque_nm / p.max_torque_nm))

    def _gear_ratio(self, v_kmh: float, accel_ms2: float) -> float:
        """The lowest gear that keeps the engine below the rpm the driver is aiming for."""
        p = self.profile
        eagerness = min(1.0, max(0.0, accel_ms2 / p.accel_ms2))
        aim_rpm = p.lug_rpm + (p.shift_rpm - p.lug_rpm) * eagerness
        ratios = p.gear_rpm_per_kmh
        chosen = ratios[0]
        for ratio in ratios:
            if v_kmh * ratio > aim_rpm:
                break
            chosen = ratio
        return chosen

    def _ambient_c(self, t_s: float) -> float:
        p = self.profile
        daily_c = p.ambient_swing_c * math.sin(2.0 * math.pi * (t_s + p.ambient_phase_s) / DAY_S)
        return p.ambient_mean_c + daily_c + self._weather_c

    def _thermal_targets(self, load_frac: float, ambient_c: float) -> tuple[float, float, float]:
        """Where coolant, oil and intake air temperatures would settle at this operating point."""
        p = self.profile
        heat_c = max(0.0, ambient_c - 20.0)
        lost_cooling_c = 18.0 + 12.0 * load_frac + 0.3 * max(0.0, ambient_c - 10.0)
        coolant_c = (p.thermostat_c + 5.0 * load_frac + 0.15 * heat_c
                     + self._severity[FaultMode.COOLING_DEGRADATION] * lost_cooling_c)
        # The oil has a cooler of its own here, so a cooling fault stays in its subsystem.
        oil_c = p.thermostat_c + 8.0 + 20.0 * load_frac + 0.2 * heat_c
        lost_intercooling_c = 15.0 + 25.0 * load_frac
        intake_c = (ambient_c + 4.0 + 10.0 * load_frac
                    + p.heat_soak_c * math.exp(-self._speed_kmh / 35.0)
                    + self._severity[FaultMode.INTERCOOLER_FOULING] * lost_intercooling_c)
        return coolant_c, oil_c, intake_c

    def _warm(self, load_frac: float, ambient_c: float) -> None:
        coolant_c, oil_c, intake_c = self._thermal_targets(load_frac, ambient_c)
        self._coolant_c += (coolant_c - self._coolant_c) * self._coolant_gain
        self._oil_c += (oil_c - self._oil_c) * self._oil_gain
        self._intake_c += (intake_c - self._intake_c) * self._intake_gain

    def _oil_pressure_kpa(self, rpm: float) -> float:
        """Pump pressure rises with rpm up to the relief valve; thinner hot oil gives less."""
        p = self.profile
        viscosity = math.exp(-0.01 * (self._oil_c - 100.0))
        healthy_kpa = p.relief_kpa * math.tanh(rpm / (3.2 * p.idle_rpm) * viscosity)
        return healthy_kpa * (1.0 - 0.55 * self._severity[FaultMode.OIL_PRESSURE_LOSS])

    def _battery_v(self, rpm: float, ambient_c: float) -> float:
        """The regulator's setpoint, temperature-compensated, sagging a little at idle."""
        p = self.profile
        healthy_v = (p.charge_v - 0.004 * (ambient_c - 25.0)
                     - 0.12 * math.exp(-(rpm - p.idle_rpm) / 400.0))
        return healthy_v + self._severity[FaultMode.CHARGING_FAILURE] * (12.0 - healthy_v)

    def _vibration_g(self, rpm: float) -> float:
        idle_g, engine_g, road_g = self.profile.vibration_g
        engine_g *= (rpm / 1000.0) ** 1.5
        road_g *= (self._speed_kmh / 100.0) ** 2
        wear = self._severity[FaultMode.BEARING_WEAR]
        return idle_g + engine_g * (1.0 + 3.0 * wear) + road_g + 0.05 * wear

    def _measure(self, rpm: float, load_pct: float, ambient_c: float,
                 noise: list[float]) -> dict[str, float]:
        """The sensor readings: true values plus each sensor's measurement noise."""
        _, _, _, e_rpm, e_speed, e_load, e_air, e_coolant, e_oil, e_battery, e_vib, e_intake = noise
        speed_kmh = self._speed_kmh
        return {
            "engine_rpm": rpm + 12.0 * e_rpm,
            "vehicle_speed_kmh": max(0.0, speed_kmh + 0.3 * e_speed) if speed_kmh else 0.0,
            "engine_load_pct": min(100.0, max(0.0, load_pct + 1.5 * e_load)),
            "ambient_temp_c": ambient_c + 0.2 * e_air,
            "coolant_temp_c": self._coolant_c + 0.3 * e_coolant,
            "oil_pressure_kpa": self._oil_pressure_kpa(rpm) + 4.0 * e_oil,
            "battery_v": self._battery_v(rpm, ambient_c) + 0.03 * e_battery,
            "vibration_rms_g": max(0.0, self._vibration_g(rpm) + 0.012 * e_vib),
            "intake_temp_c": self._intake_c + 0.4 * e_intake,
        }


def _ou_rates(dt_s: float, tau_s: float, std: float) -> tuple[float, float]:
    """Per-step decay and kick of an Ornstein-Uhlenbeck process with stationary ``std``."""
    keep = math.exp(-dt_s / tau_s)
    return keep, std * math.sqrt(1.0 - keep * keep)


def make_fleet(
    n: int,
    seed: int,
    fault_fraction: float = 0.2,
    period_s: float = 1.0,
    start_ts_s: float = 0.0,
    **fault_kwargs: tuple[float, float],
) -> list[SimulatedVehicle]:
    """``n`` vehicles ``veh-0000``, ``veh-0001``, ... with faults from :func:`plan_faults`.

    ``fault_kwargs`` (``onset_s``, ``ramp_s``) go to :func:`~devices.faults.plan_faults`.

    Examples
    --------
    >>> fleet = make_fleet(10, seed=3)
    >>> [(v.vehicle_id, v.fault.mode.value) for v in fleet if v.fault]
    [('veh-0000', 'bearing_wear'), ('veh-0007', 'cooling_degradation')]
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    ids = [f"veh-{index:04d}" for index in range(n)]
    faults = plan_faults(ids, seed, fault_fraction, **fault_kwargs)
    return [SimulatedVehicle(vid, seed, faults.get(vid), period_s, start_ts_s) for vid in ids]
