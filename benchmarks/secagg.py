"""What secure aggregation costs a round: bytes and CPU per vehicle and for the gateway.

Runs whole secure rounds in this process (:func:`federation.secagg.simulation.simulate`,
every message through the codec, noise on) for each ``--vehicles`` count, each vehicle
releasing the 54-number whitened vector of the nine vehicle channels, ``--dropout`` of them
dropping out before the masked-input phase (the case that costs the gateway most: it
rebuilds their mask keys and strips their pairwise masks). It prints, per count, the plan
(neighbours, Shamir threshold, quorum, fixed-point bits), the payload bytes a vehicle sends
and receives over the four phases (in the binary form), against what it sends in a plain
round (one central ``update`` in the binary form vehicles send, the same release unmasked),
the CPU a vehicle and the gateway spend, and the
expansion the same fixed costs give at the 2**20 coordinates of Bonawitz et al.'s figure
(1.73 times at 1,000 users), against 32-bit floats sent in the clear.

    python -m benchmarks.secagg --vehicles 100 1000 10000

Payloads only: :mod:`benchmarks.secagg_wire` counts what travels over MQTT, both ways, for a
secure round and a plain one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from federation import messages
from federation.features import FEATURE_NAMES
from federation.messages import Update
from federation.privacy import GaussianMechanism, public_centre
from federation.secagg import RoundPlan, SecAggConfig
from federation.secagg.simulation import simulate
from federation.summary import ModelSummary
from federation.whitening import Whitening

CLIP_NORM = 4.0
EPSILON = 0.548  # one of three releases of a lifetime budget of 1 (docs/PRIVACY.md)
PAPER_COORDINATES = 2**20


def releases(vehicles: int, seed: int) -> tuple[dict[str, np.ndarray], bytes]:
    """Each vehicle's clipped whitened release about the public centre, and one vehicle's
    plain central ``update`` carrying the same release."""
    rng = np.random.default_rng(seed)
    centre = public_centre(FEATURE_NAMES).weighted(1.0)
    whitening = Whitening(centre)
    mechanism = GaussianMechanism(EPSILON, 1e-5, CLIP_NORM)
    vectors, update = {}, b""
    for k in range(vehicles):
        data = np.clip(rng.normal(0.5, 0.1, (300, len(FEATURE_NAMES))), 0.0, 1.0)
        clipped = mechanism.clipped(ModelSummary.from_array(FEATURE_NAMES, data), centre)
        vectors[f"veh-{k:05d}"] = whitening.pack(clipped)
        if not update:
            update = messages.encode_binary(Update(
                "veh-00000", 1, 0, clipped, EPSILON, 1e-5, EPSILON, 1.7e9, privacy="central",
                clip_norm=CLIP_NORM))
    return vectors, update


def _measure(vehicles: int, dropout: float, seed: int) -> dict[str, float]:
    vectors, update = releases(vehicles, seed)
    dimension = len(next(iter(vectors.values())))
    config = SecAggConfig(dimension=dimension, clip_norm=CLIP_NORM, epsilon=EPSILON)
    plan = RoundPlan.make(config, vehicles)
    ids = sorted(vectors)
    gone = np.random.default_rng(seed).choice(vehicles, int(dropout * vehicles), replace=False)
    began = time.perf_counter()
    result, traffic = simulate(config, vectors, dropouts={ids[i]: "input" for i in gone},
                               seed=seed)
    wall = time.perf_counter() - began
    finished = [v for v in ids if v in result.vehicle_ids]  # took part in all four phases
    sent = float(np.mean([traffic.sent_bytes[v] for v in finished]))
    received = float(np.mean([traffic.received_bytes[v] for v in finished]))
    fixed = sent + received - dimension * plan.ring.width_bytes  # all but the vector
    return {
        "degree": plan.degree, "threshold": plan.threshold, "quorum": plan.min_inputs,
        "fraction_bits": plan.fraction_bits, "sent": sent, "received": received,
        "plain": len(update), "ratio": (sent + received) / len(update),
        "vehicle_ms": 1e3 * float(np.mean([traffic.vehicle_cpu_seconds[v] for v in finished])),
        "gateway_s": traffic.server_cpu_seconds,
        "gateway_ms_per_vehicle": 1e3 * traffic.server_cpu_seconds / vehicles,
        "paper_expansion": (fixed + PAPER_COORDINATES * plan.ring.width_bytes)
        / (PAPER_COORDINATES * 4),
        "noise_std": result.noise_std, "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="share of vehicles dropping out before the masked input")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"54-number releases, clip {CLIP_NORM}, epsilon {EPSILON} per release, "
          f"{args.dropout:.0%} dropping out before the masked input")
    print(f"{'vehicles':>9}{'k':>5}{'t':>4}{'quorum':>8}{'f':>4}{'sent B':>9}{'recv B':>9}"
          f"{'plain B':>9}{'ratio':>7}{'veh CPU ms':>12}{'gw CPU s':>10}{'gw ms/veh':>11}"
          f"{'x at 2^20':>11}{'wall s':>8}")
    for vehicles in args.vehicles:
        m = _measure(vehicles, args.dropout, args.seed)
        print(f"{vehicles:>9,}{m['degree']:>5}{m['threshold']:>4}{m['quorum']:>8,}"
              f"{m['fraction_bits']:>4}{m['sent']:>9,.0f}{m['received']:>9,.0f}"
              f"{m['plain']:>9,}{m['ratio']:>7.1f}{m['vehicle_ms']:>12.1f}"
              f"{m['gateway_s']:>10.2f}{m['gateway_ms_per_vehicle']:>11.2f}"
              f"{m['paper_expansion']:>11.3f}{m['wall_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
