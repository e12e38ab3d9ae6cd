"""Who shares masks and secrets with whom: a sparse random graph everyone can recompute.

SecAgg+ (Bell et al., CCS 2020) replaces the complete graph of Bonawitz et al. with a
``k``-regular graph of degree logarithmic in the round's size: a vehicle agrees masks with,
and hands shares to, its ``k`` neighbours only, so its work and bytes grow with ``k``. The
graph here is a Harary graph on a random ring: the advertised vehicles, sorted, are placed
around a ring in the order of a permutation drawn from the *round's seed*, and each is joined
to the ``k/2`` nearest on either side. The seed is a hash of the round number and the sorted
ids, public data, so the gateway, any vehicle given the list, or an auditor derives the same
graph: no one chooses it. Removing vehicles disconnects such a graph only where ``k/2``
consecutive ones around the ring are all gone, twice (:mod:`federation.secagg.params` sizes
``k`` so that this is negligible). With ``k`` at least ``N - 1`` the graph is complete.

>>> ids = [f"veh-{i}" for i in range(8)]
>>> graph = neighbourhoods(ids, 4, graph_seed(1, ids))
>>> {len(n) for n in graph.values()}
{4}
>>> all(u in graph[v] for u in ids for v in graph[u])
True
>>> neighbourhoods(ids[:4], 4, graph_seed(1, ids[:4]))["veh-0"]
('veh-1', 'veh-2', 'veh-3')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["graph_seed", "neighbourhoods"]


def graph_seed(round_number: int, vehicle_ids: Sequence[str]) -> bytes:
    """The public seed of a round's graph: SHA-256 of the round and the sorted ids."""
    text = "\n".join(("fedfleet/secagg/v1/graph", str(round_number), *sorted(vehicle_ids)))
    return hashlib.sha256(text.encode()).digest()


def neighbourhoods(vehicle_ids: Sequence[str], degree: int,
                   seed: bytes) -> dict[str, tuple[str, ...]]:
    """Each vehicle's neighbours, sorted by id, in the Harary graph of even ``degree``."""
    ids = sorted(vehicle_ids)
    count = len(ids)
    if degree >= count - 1:
        return {u: tuple(v for v in ids if v != u) for u in ids}
    if degree < 2 or degree % 2:
        raise ValueError(f"degree must be even and at least 2, got {degree}")
    ring = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32)).permutation(count)
    offsets = np.concatenate([np.arange(1, degree // 2 + 1), -np.arange(1, degree // 2 + 1)])
    position = np.empty(count, dtype=np.int64)
    position[ring] = np.arange(count)
    around = ring[(position[:, None] + offsets[None, :]) % count]
    return {ids[i]: tuple(sorted(ids[j] for j in around[i])) for i in range(count)}
