"""The edge: sensor sources, the on-device detector, the vehicle agent and the fleet runner.

Data path on a vehicle: a :class:`~devices.sources.SensorSource` yields readings, the
detector scores then learns each one, alerts leave on the alert topic, and once per round
the agent publishes a clipped, noised summary of its model. Raw readings never leave.
"""
