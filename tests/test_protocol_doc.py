"""docs/PROTOCOL.md is part of the contract: its examples must be valid messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from federation import messages, topics
from federation.features import FEATURES
from federation.secagg import messages as secure

DOC = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
KINDS = {"round": messages.RoundOpen, "model": messages.GlobalModel,
         "update": messages.Update, "alert": messages.Alert, "status": messages.Status,
         "partial": messages.Partial, "lease": messages.Lease}
SECURE_KINDS = {kind: cls for cls, kind in secure.KINDS.items()}
EXAMPLES = dict(re.findall(r"```json (\w+)\n(.*?)\n```", DOC, flags=re.S))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_documented_example_decodes(kind):
    message = messages.decode(KINDS[kind], EXAMPLES[kind].encode())

    assert json.loads(messages.encode(message)) == json.loads(EXAMPLES[kind])


@pytest.mark.parametrize("kind", sorted(SECURE_KINDS))
def test_every_documented_secure_round_example_decodes(kind):
    message = secure.decode(SECURE_KINDS[kind], EXAMPLES[kind].encode())

    assert json.loads(secure.encode(message)) == json.loads(EXAMPLES[kind])


def test_every_secure_round_topic_is_documented():
    documented = set(re.findall(r"^\| `(fleet/v1/[^`]*secagg[^`]*)`", DOC, re.M))

    code = {topics.SECAGG_ROUND_TOPIC, topics.secagg_topic("veh-0042"),
            topics.secagg_reply_topic("veh-0042")}
    assert {t.replace("{vehicle_id}", "veh-0042") for t in documented} == code


def test_the_documented_feature_table_matches_the_code():
    rows = re.findall(r"^\| (\d) \| `(\w+)` \| (-?[\d.]+) \| (-?[\d.]+) \| (.+?) \|$", DOC, re.M)

    documented = [(name, float(lo), float(hi)) for _, name, lo, hi, _ in rows]

    assert documented == [(f.name, f.low, f.high) for f in FEATURES]
