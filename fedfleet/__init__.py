"""The face of fedfleet: the ``fedfleet`` command and its configuration.

Nothing imports this package; it imports the components (devices, gateway, broker).
"""
