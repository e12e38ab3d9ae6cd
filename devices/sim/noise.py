"""Measurement noise for many simulated vehicles, each drawn from its own generator in blocks.

A vehicle's noise is one stream of standard normals from its own generator, whatever the block
size: a generator gives the same numbers drawn 64 at a time as 512 at a time. So a block is
only what is held in memory at once, ``block_steps * channels`` float64 per vehicle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NoiseBlocks"]

_GROUP = 64  # vehicles whose blocks are drawn, then transposed, at a time


class NoiseBlocks:
    """Standard normal noise for each vehicle and step, ``channels`` numbers per step.

    Parameters
    ----------
    rngs
        One generator per vehicle.
    channels
        Numbers drawn per vehicle and step.
    block_steps
        Steps drawn at once: each vehicle holds ``block_steps * channels`` float64.

    Examples
    --------
    >>> blocks = NoiseBlocks([np.random.default_rng(7), np.random.default_rng(8)], channels=3,
    ...                      block_steps=2)
    >>> steps = [blocks.next() for _ in range(3)]
    >>> steps[2][:, 0] == np.random.default_rng(7).standard_normal((3, 3))[2]
    array([ True,  True,  True])
    >>> blocks.nbytes_per_vehicle
    48
    """

    def __init__(self, rngs: Sequence[np.random.Generator], channels: int,
                 block_steps: int = 16) -> None:
        if channels < 1 or block_steps < 1:
            raise ValueError(f"channels and block_steps must be at least 1, got {channels} and "
                             f"{block_steps}")
        self._rngs = list(rngs)
        # Steps first, then channels, then vehicles: each step's channel is one contiguous row.
        self._block = np.empty((block_steps, channels, len(self._rngs)))
        self._row = block_steps

    @property
    def nbytes_per_vehicle(self) -> int:
        """Bytes of noise each vehicle holds."""
        return self._block.shape[0] * self._block.shape[1] * self._block.itemsize

    def next(self) -> np.ndarray:
        """The next step's noise, ``(channels, vehicles)``; valid until the next call."""
        if self._row == len(self._block):
            self._draw()
            self._row = 0
        self._row += 1
        return self._block[self._row - 1]

    def _draw(self) -> None:
        """Each generator fills a contiguous block of its own, copied over a group at a time."""
        block_steps, channels, _ = self._block.shape
        for start in range(0, len(self._rngs), _GROUP):
            group = self._rngs[start:start + _GROUP]
            drawn = np.empty((len(group), block_steps, channels))
            for rng, out in zip(group, drawn, strict=True):
                rng.standard_normal(out=out)
            self._block[:, :, start:start + len(group)] = drawn.transpose(1, 2, 0)
