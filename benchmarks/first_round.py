"""A new user's first minutes: from a fresh clone, how long ``make demo`` takes to print its
first round, and how large the virtualenv it made is.

Clones the repository (at ``--ref``, HEAD by default) into a temp dir, runs ``make demo`` there
with a duration and without the dashboard, and prints the seconds until the install ended,
until the demo's first line and until its first round, then the size of ``.venv``. Wheels
come from pip's cache when it holds them, so the first run on a machine is the slowest.

    python -m benchmarks.first_round --ref main
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).parent.parent


def _size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="the commit to clone (default HEAD)")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfleet-first-round-"))
    try:
        clone = work / "fedfleet"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", args.ref], cwd=clone, check=True)
        env = {**os.environ, "FEDFLEET_MQTT": f"mqtt://127.0.0.1:{free_port()}"}
        env.pop("VIRTUAL_ENV", None)
        started = time.monotonic()
        marks: dict[str, float] = {}
        with subprocess.Popen(["make", "demo", 'ARGS=--http-port 0 --duration 20'], cwd=clone,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as demo:
            assert demo.stdout is not None
            for line in demo.stdout:
                elapsed = time.monotonic() - started
                if "fedfleet demo" in line and "installed" not in marks:
                    marks["installed"] = elapsed
                if line.startswith("fedfleet demo:"):
                    marks.setdefault("first line", elapsed)
                if "] round 1:" in line:
                    marks.setdefault("first round", elapsed)
                if elapsed > args.timeout_s:
                    demo.terminate()
        for what, seconds in marks.items():
            print(f"{what}: {seconds:.1f} s after `make demo` in a fresh clone")
        print(f"virtualenv: {_size_bytes(clone / '.venv') / 1e6:,.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
