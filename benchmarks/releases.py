"""What one private release costs on a vehicle, and where: clipping, noise, ledger, encoding.

For each privacy mode (central, the default: clipped only; local: noised on the vehicle),
``--vehicles`` simulated vehicles learn up to their first release and then release in one
pass, as a fleet process does, with their ledgers on disk in a temporary folder:

- ``release_ms``: the median wall time of one vehicle's release (clip, noise, the budget
  check, the ledger line written, the encoding), without the sync;
- ``commit_ms``: the pass's group commit, one sync for every ledger written in it, and
  ``per_release_ms``: ``release_ms`` plus the commit shared by the pass's releases;
- ``alone_ms``: the median release of a vehicle that syncs its own ledger (a single device).

Then the secure Gaussian sampler per call on a release's 54 coordinates: on its grid
(``gaussian_ms``, what :class:`~federation.privacy.SecureNoise` draws) and on every float
(``exact_gaussian_ms``, OpenDP's default). The disk and the machine may be shared: compare
figures of one run.

    python -m benchmarks.releases --vehicles 20 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import table
from devices.onboard.ledger import GroupCommit
from devices.onboard.vehicle import Vehicle
from devices.runners.fleet import simulated_vehicles
from federation import messages, topics
from federation.messages import RoundOpen
from federation.privacy import SecureNoise
from fedfleet.config import resolve
from fedfleet.privacy import ledgers, vehicle_options

PRIVACY = ("central", "local")


def _due(privacy: str, vehicles: int, seed: int, folder: Path) -> list[Vehicle]:
    """``vehicles`` whose first release is due, in an open round, ledgers in ``folder``."""
    settings = resolve("fleet", {"privacy": privacy}, environ={})
    fleet = simulated_vehicles(vehicles, seed, ledger_for=ledgers(settings, folder),
                               **vehicle_options(settings))
    now = time.time()
    for vehicle in fleet:
        for _ in range(vehicle.next_release_readings):
            vehicle.step()
        vehicle.on_message(topics.ROUND_TOPIC,
                           messages.encode(RoundOpen(1, now, now + 3600, 1, 0)))
    return fleet


def _timed_releases(fleet: list[Vehicle]) -> list[float]:
    """Each vehicle's release time, after one more vehicle's untimed (it pays for imports and
    caches once a process)."""
    [_] = fleet[0].take_part()
    times_s = []
    for vehicle in fleet[1:]:
        began = time.perf_counter()
        [sent] = vehicle.take_part()
        times_s.append(time.perf_counter() - began)
        assert sent.topic.endswith("/update"), sent.topic
    return times_s


def release_ms(privacy: str, seed: int, vehicles: int = 20) -> dict[str, float]:
    """One pass of ``vehicles`` first releases under ``privacy``, in milliseconds."""
    with tempfile.TemporaryDirectory() as folder:
        group = GroupCommit()
        fleet = _due(privacy, vehicles + 1, seed, Path(folder) / "group")
        for vehicle in fleet:
            vehicle.ledger.group = group
        release_s = statistics.median(_timed_releases(fleet))
        began = time.perf_counter()
        group.commit()  # the untimed vehicle's ledger too: a pass of vehicles + 1
        commit_s = time.perf_counter() - began
        alone_s = statistics.median(_timed_releases(
            _due(privacy, vehicles + 1, seed, Path(folder) / "alone")))
    return {"release_ms": 1e3 * release_s, "commit_ms": 1e3 * commit_s,
            "per_release_ms": 1e3 * (release_s + commit_s / vehicles),
            "alone_ms": 1e3 * alone_s}


def sampler_ms(calls: int = 20, size: int = 54, scale: float = 51.7) -> dict[str, float]:
    """The secure Gaussian sampler per call on ``size`` coordinates: on its grid, and exact
    on every float (OpenDP's default)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    exact = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                               dp.l2_distance(T=float), scale=scale)
    noise, zeros = SecureNoise(), np.zeros(size)
    noise.gaussian(zeros, scale)  # build and cache the measurement first

    def median_s(draw: Any) -> float:
        times_s = []
        for _ in range(calls):
            began = time.perf_counter()
            draw()
            times_s.append(time.perf_counter() - began)
        return statistics.median(times_s)

    return {"gaussian_ms": 1e3 * median_s(lambda: noise.gaussian(zeros, scale)),
            "exact_gaussian_ms": 1e3 * median_s(lambda: exact(zeros.tolist())),
            "coordinates": float(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[20],
                        help="vehicles releasing in one pass (one measurement each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for vehicles in args.vehicles:
        for privacy in PRIVACY:
            rows.append({"privacy": privacy, "vehicles": vehicles,
                         **release_ms(privacy, args.seed, vehicles)})
            print(json.dumps(rows[-1]), flush=True)
    sampler = sampler_ms()
    print(json.dumps(sampler), flush=True)
    print(table(rows, ("privacy", "vehicles", "release_ms", "commit_ms", "per_release_ms",
                       "alone_ms")))
    print(table([sampler], tuple(sampler)))


if __name__ == "__main__":
    main()
