"""``fedfleet bench``: the benchmarks of ``benchmarks/``, each a command that prints figures.

The benchmarks live in the source checkout, not in the installed package: like the tests,
they start their own Mosquitto and gateways (``tests/servers.py``, ``tests/processes.py``) and
need the test extras (``make test`` installs them). So ``fedfleet bench`` finds the checkout
that this package was installed from in place (``pip install -e``, as ``make`` does), lists
its benchmarks without importing them, and runs one's ``main()`` with the options given after
its name. ``docs/PERFORMANCE.md`` says which figures each gives.

    fedfleet bench                              # what there is, a line each
    fedfleet bench scale --help
    fedfleet bench scale --vehicles 1000 --duration-s 30
"""

from __future__ import annotations

import argparse
import ast
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "available", "checkout", "main"]

PACKAGE = "benchmarks"


def add_parser(sub: Any) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    parser = sub.add_parser(
        "bench", help="run a benchmark (from a source checkout)",
        description="Run one of the benchmarks of the source checkout's benchmarks/ folder: "
                    "each prints its figures as a table and as JSON. Without NAME, list them. "
                    "Options after NAME are the benchmark's own (fedfleet bench NAME --help).")
    parser.add_argument("name", nargs="?", metavar="NAME", help="the benchmark to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, metavar="...",
                        help="the benchmark's options")


def checkout() -> Path | None:
    """The source checkout holding ``benchmarks/`` beside this package, or None when the
    package was installed from a wheel (no benchmarks come with it)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / PACKAGE / "__init__.py").is_file() else None


def available(root: Path) -> dict[str, str]:
    """Each benchmark of ``root/benchmarks`` (a module with a ``main``), by name, with the
    first line of its docstring; read from the source, so that listing imports nothing."""
    found = {}
    for path in sorted((root / PACKAGE).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            doc = ast.get_docstring(tree) or ""
            found[path.stem] = doc.split("\n\n")[0].replace("\n", " ").replace("``", "")
    return found


def main(args: argparse.Namespace) -> int:
    """List the benchmarks, or run one: its own exit code; 2 with one line when there is no
    checkout, no such benchmark, or a package it needs is missing; 1 with one line when it
    fails."""
    root = checkout()
    if root is None:
        return _error("the benchmarks come with the source checkout, not the installed "
                      "package: clone the repository and run `make test` once, then "
                      "`.venv/bin/fedfleet bench` there")
    names = available(root)
    if not args.name:
        width = max(map(len, names), default=0)
        for name, summary in names.items():
            print(f"{name:<{width}}  {summary}")
        print(f"\nfedfleet bench NAME --help: a benchmark's options ({root / PACKAGE})")
        return 0
    if args.name not in names:
        return _error(f"no benchmark {args.name!r}; there are: {', '.join(names)}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # spawned processes inherit it, and import it too
    try:
        module = import_module(f"{PACKAGE}.{args.name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == PACKAGE:
            raise
        return _error(f"{args.name} needs the package {exc.name!r}, which the test extras "
                      f"bring: pip install -e '{root}[test]' (or run `make test` once)")
    argv, sys.argv = sys.argv, [f"fedfleet bench {args.name}", *args.options]
    try:
        module.main()
    except SystemExit as exc:  # argparse's 2, or a benchmark's one line
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return _error(f"{args.name}: {exc.code}", code=1)
    except KeyboardInterrupt:
        return _error(f"{args.name} interrupted: no figures", code=1)
    except Exception as exc:  # a server that did not start, a fleet that did not connect
        return _error(f"{args.name} failed: {type(exc).__name__}: {exc} (python -m "
                      f"{PACKAGE}.{args.name} in {root} gives the traceback)", code=1)
    finally:
        sys.argv = argv
    return 0


def _error(message: str, code: int = 2) -> int:
    print(f"fedfleet bench: error: {message}", file=sys.stderr)
    return code
