"""Vehicles on the wire: one vehicle on a real source (:mod:`~devices.runners.agent`), or a
simulated fleet (:mod:`~devices.runners.fleet`) whose MQTT clients share one thread
(:mod:`~devices.runners.mux`).
"""
