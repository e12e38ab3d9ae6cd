"""docs/PROTOCOL.md is part of the contract: its examples must be valid messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from federation import messages
from federation.features import FEATURES

DOC = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
KINDS = {"round": messages.RoundOpen, "model": messages.GlobalModel,
         "update": messages.Update, "alert": messages.Alert, "status": messages.Status,
         "partial": messages.Partial, "lease": messages.Lease}
EXAMPLES = dict(re.findall(r"```json (\w+)\n(.*?)\n```", DOC, flags=re.S))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_documented_example_decodes(kind):
    message = messages.decode(KINDS[kind], EXAMPLES[kind].encode())

    assert json.loads(messages.encode(message)) == json.loads(EXAMPLES[kind])


def test_the_documented_feature_table_matches_the_code():
    rows = re.findall(r"^\| (\d) \| `(\w+)` \| (-?[\d.]+) \| (-?[\d.]+) \| (.+?) \|$", DOC, re.M)

    documented = [(name, float(lo), float(hi)) for _, name, lo, hi, _ in rows]

    assert documented == [(f.name, f.low, f.high) for f in FEATURES]
