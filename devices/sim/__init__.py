"""The simulated world: seeded vehicles with profiles, driving cycles, physics, noise and faults.

:class:`~devices.sim.simulator.SimulatedFleet` steps many vehicles at once on arrays; each
:class:`~devices.sim.simulator.SimulatedVehicle` is also a :class:`~devices.sources.SensorSource`,
so a simulated vehicle reaches the detector the way a real one does.
"""
