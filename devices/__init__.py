"""The edge, one package per step of the data path.

:mod:`devices.sources` (and the simulated world, :mod:`devices.sim`) yield readings →
:mod:`devices.onboard` scores then learns each one, raises alerts and releases a clipped,
noised summary of its model once per round → :mod:`devices.runners` puts a vehicle, or a
whole simulated fleet, on the broker. Raw readings never leave.
"""
