"""What `pip install .` ships: every package of the source tree, so the Docker image runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_package_in_the_tree_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    top = {name.split(".")[0] for name in listed}

    found = {".".join(init.parent.relative_to(ROOT).parts)
             for name in top for init in (ROOT / name).rglob("__init__.py")}

    assert found - listed == set()
    assert {"devices.onboard", "gateway.store"} <= found
