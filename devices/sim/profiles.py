"""Who drives what, where: vehicle kinds, climates and driving styles, drawn per vehicle."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DAY_S", "RAD_S_PER_RPM", "VehicleProfile"]

RAD_S_PER_RPM = 2.0 * math.pi / 60.0
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class _Kind:
    share: float
    idle_rpm: tuple[float, float]
    rated_rpm: float
    gears: int
    top_gear_rpm_per_kmh: tuple[float, float]
    first_to_top_ratio: float
    mass_kg: tuple[float, float]
    drag_area_m2: tuple[float, float]
    rolling_coeff: float
    power_kw: tuple[float, float]
    max_speed_kmh: float
    accel_ms2: float
    idle_load_pct: float
    vibration_g: tuple[float, float, float]  # at idle, per (krpm)^1.5, per (speed / 100 km/h)^2


@dataclass(frozen=True, slots=True)
class _Style:
    share: float
    accel_share: float
    decel_ms2: float
    speed_tau_s: float
    lug_share: float  # cruising rpm, as a share of the way from idle to rated rpm
    shift_share: float  # rpm at full acceleration, likewise
    city_kmh: tuple[float, float]
    highway_kmh: tuple[float, float]


_KINDS = {
    "car": _Kind(
        share=0.6, idle_rpm=(700.0, 850.0), rated_rpm=5500.0, gears=6,
        top_gear_rpm_per_kmh=(22.0, 26.0), first_to_top_ratio=4.5, mass_kg=(1200.0, 1700.0),
        drag_area_m2=(0.55, 0.75), rolling_coeff=0.011, power_kw=(80.0, 140.0),
        max_speed_kmh=130.0, accel_ms2=2.8, idle_load_pct=20.0, vibration_g=(0.04, 0.03, 0.08)),
    "van": _Kind(
        share=0.25, idle_rpm=(700.0, 800.0), rated_rpm=4000.0, gears=6,
        top_gear_rpm_per_kmh=(21.0, 25.0), first_to_top_ratio=4.5, mass_kg=(2000.0, 3200.0),
        drag_area_m2=(1.0, 1.4), rolling_coeff=0.012, power_kw=(90.0, 130.0),
        max_speed_kmh=120.0, accel_ms2=2.0, idle_load_pct=22.0, vibration_g=(0.06, 0.04, 0.10)),
    "truck": _Kind(
        share=0.15, idle_rpm=(550.0, 650.0), rated_rpm=1900.0, gears=8,
        top_gear_rpm_per_kmh=(13.0, 15.0), first_to_top_ratio=9.0, mass_kg=(7500.0, 18000.0),
        drag_area_m2=(4.5, 6.5), rolling_coeff=0.007, power_kw=(180.0, 320.0),
        max_speed_kmh=90.0, accel_ms2=0.9, idle_load_pct=15.0, vibration_g=(0.08, 0.07, 0.12)),
}
_CLIMATES = {  # fleet share, range of the mean ambient temperature in degrees C
    "cold": (0.25, (-15.0, 2.0)),
    "temperate": (0.5, (5.0, 18.0)),
    "hot": (0.25, (26.0, 36.0)),
}
_STYLES = {
    "calm": _Style(
        share=0.3, accel_share=0.5, decel_ms2=1.5, speed_tau_s=12.0, lug_share=0.15,
        shift_share=0.45, city_kmh=(30.0, 45.0), highway_kmh=(90.0, 110.0)),
    "normal": _Style(
        share=0.5, accel_share=0.7, decel_ms2=2.5, speed_tau_s=8.0, lug_share=0.2,
        shift_share=0.6, city_kmh=(35.0, 55.0), highway_kmh=(100.0, 120.0)),
    "aggressive": _Style(
        share=0.2, accel_share=1.0, decel_ms2=3.5, speed_tau_s=5.0, lug_share=0.28,
        shift_share=0.8, city_kmh=(40.0, 65.0), highway_kmh=(110.0, 130.0)),
}


@dataclass(frozen=True, slots=True)
class VehicleProfile:
    """What makes one simulated vehicle unlike another: its kind, climate and driver.

    ``kind`` (car, van, truck) sets the engine, gearing, mass and drag; ``climate`` (cold,
    temperate, hot) the ambient temperature; ``style`` (calm, normal, aggressive) how hard the
    driver accelerates, where they shift and how fast they go. The other fields are drawn
    around those. Gear ratios are engine rpm per km/h, top gear first.

    Examples
    --------
    >>> profile = VehicleProfile.draw(np.random.default_rng(0))
    >>> profile.kind, profile.climate, profile.style, len(profile.gear_rpm_per_kmh)
    ('van', 'temperate', 'calm', 6)
    """

    kind: str
    climate: str
    style: str
    idle_rpm: float
    rated_rpm: float
    gear_rpm_per_kmh: tuple[float, ...]
    mass_kg: float
    drag_area_m2: float
    rolling_coeff: float
    max_torque_nm: float
    max_speed_kmh: float
    accel_ms2: float
    decel_ms2: float
    speed_tau_s: float
    lug_rpm: float
    shift_rpm: float
    city_kmh: tuple[float, float]
    highway_kmh: tuple[float, float]
    idle_load_pct: float
    ambient_mean_c: float
    ambient_swing_c: float
    ambient_phase_s: float
    thermostat_c: float
    relief_kpa: float
    charge_v: float
    heat_soak_c: float
    vibration_g: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> VehicleProfile:
        """Draw a profile: kind, climate and style by their fleet shares, the rest around them."""
        kind_name, kind = _pick(rng, {k: (v.share, v) for k, v in _KINDS.items()})
        climate, ambient_c = _pick(rng, _CLIMATES)
        style_name, style = _pick(rng, {k: (v.share, v) for k, v in _STYLES.items()})
        idle_rpm = float(rng.uniform(*kind.idle_rpm))
        top = float(rng.uniform(*kind.top_gear_rpm_per_kmh))
        steps = np.linspace(0.0, 1.0, kind.gears)
        rpm_span = kind.rated_rpm - idle_rpm
        return cls(
            kind=kind_name, climate=climate, style=style_name, idle_rpm=idle_rpm,
            rated_rpm=kind.rated_rpm,
            gear_rpm_per_kmh=tuple(float(top * kind.first_to_top_ratio**s) for s in steps),
            mass_kg=float(rng.uniform(*kind.mass_kg)),
            drag_area_m2=float(rng.uniform(*kind.drag_area_m2)),
            rolling_coeff=kind.rolling_coeff,
            # Peak torque sits a fifth above the torque at rated power.
            max_torque_nm=1.2e3 * float(rng.uniform(*kind.power_kw)) / (
                kind.rated_rpm * RAD_S_PER_RPM),
            max_speed_kmh=kind.max_speed_kmh, accel_ms2=kind.accel_ms2 * style.accel_share,
            decel_ms2=style.decel_ms2, speed_tau_s=style.speed_tau_s,
            lug_rpm=idle_rpm + style.lug_share * rpm_span,
            shift_rpm=idle_rpm + style.shift_share * rpm_span,
            city_kmh=style.city_kmh,
            highway_kmh=(min(style.highway_kmh[0], kind.max_speed_kmh),
                         min(style.highway_kmh[1], kind.max_speed_kmh)),
            idle_load_pct=kind.idle_load_pct,
            ambient_mean_c=float(rng.uniform(*ambient_c)),
            ambient_swing_c=float(rng.uniform(3.0, 7.0)),
            ambient_phase_s=float(rng.uniform(0.0, DAY_S)),
            thermostat_c=float(rng.uniform(88.0, 92.0)),
            relief_kpa=float(rng.uniform(450.0, 500.0)),
            charge_v=float(rng.uniform(13.9, 14.4)),
            heat_soak_c=float(rng.uniform(15.0, 25.0)),
            vibration_g=_scaled(kind.vibration_g, float(rng.uniform(0.8, 1.3))),
        )


def _pick(rng: np.random.Generator, table: dict[str, tuple[float, Any]]) -> tuple[str, Any]:
    names = list(table)
    shares = np.array([table[name][0] for name in names])
    name = names[int(rng.choice(len(names), p=shares / shares.sum()))]
    return name, table[name][1]


def _scaled(values: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    return values[0] * factor, values[1] * factor, values[2] * factor

