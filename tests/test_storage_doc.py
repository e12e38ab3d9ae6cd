"""docs/STORAGE.md documents the schema that gateway/store/schema.py defines: no more, no less."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.store.schema import MEASUREMENTS

DOC = (Path(__file__).parent.parent / "docs" / "STORAGE.md").read_text()
SECTIONS = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^##|\Z)", DOC, flags=re.M | re.S))


def _rows(section: str) -> set[tuple[str, str, str]]:
    return set(re.findall(r"^\| `([\w<>]+)` \| (tag|field) \|\s*(int|float)?\s*\|", section, re.M))


def test_every_measurement_has_a_section_and_no_other():
    assert set(SECTIONS) == set(MEASUREMENTS)


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_a_section_lists_exactly_the_tags_and_fields_with_their_types(name):
    spec = MEASUREMENTS[name]
    documented = {(re.sub(r"<\w+>.*", "", key), kind, kind_type)
                  for key, kind, kind_type in _rows(SECTIONS[name])}

    assert documented == (
        {(tag, "tag", "") for tag in spec.tags}
        | {(key, "field", kind.__name__) for key, kind in spec.fields.items()}
        | {(prefix, "field", kind.__name__) for prefix, kind in spec.families.items()})
