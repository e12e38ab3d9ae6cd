"""What runs on a vehicle, without I/O: the detector, its alerts, the privacy ledger, the vehicle.

:class:`~devices.onboard.vehicle.Vehicle` reads, scores, learns and alerts
(:mod:`~devices.onboard.detector`, :mod:`~devices.onboard.alerts`), and releases clipped,
noised summaries it has first paid for in its :mod:`~devices.onboard.ledger`.
"""
