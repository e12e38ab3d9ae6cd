"""The gateway's built-in web dashboard: the fleet as the configured store knows it.

:mod:`~gateway.dashboard.figures` turns a :class:`~gateway.store.Store` into the JSON figures
the page shows; :mod:`~gateway.dashboard.server` serves the page, those figures under
``/api/…``, a live stream of them (server-sent events) and ``/healthz``.
"""

from __future__ import annotations

from gateway.dashboard.figures import snapshot
from gateway.dashboard.server import Dashboard, DashboardError

__all__ = ["Dashboard", "DashboardError", "snapshot"]
