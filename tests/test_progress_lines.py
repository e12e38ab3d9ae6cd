"""What the commands print, read as a user reads it: no figure that contradicts another."""

from __future__ import annotations

import io
import os

from devices.runners.agent import AgentStatus
from devices.sources.stdin import StdinSource
from federation.messages import Alert
from fedfleet.progress import DeviceProgress


def test_an_alert_just_over_its_threshold_does_not_read_as_equal_to_it():
    out = io.StringIO()
    progress = DeviceProgress("truck-9", out=out)

    progress(Alert("truck-9", 1.7e9, 4.03, 4.0, "cooling", (("coolant_temp_c", 4.03),), 0))

    assert "score 4.03 over threshold 4.00" in out.getvalue()


def test_the_closing_line_of_a_device_does_not_call_a_delivered_run_broker_away():
    out = io.StringIO()
    progress = DeviceProgress("truck-9", out=out)
    done = AgentStatus(False, 600, 0.0, 0, 2, 2, 0, 0, 1, 1, 3)  # disconnected, as at the end
    with open(os.devnull, "rb") as nothing:
        closing = progress.summary(done, StdinSource(["coolant_temp_c"], stream=nothing))

    assert "broker away" not in closing
    assert "truck-9 finished: 600 readings" in closing
    assert "2 alerts (2 delivered, 0 waiting, 0 dropped)" in closing
