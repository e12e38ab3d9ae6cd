"""``fedfleet bench``: the checkout's benchmarks listed and run, with clear errors around them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedfleet import bench, cli

ROOT = Path(__file__).parent.parent
FEDFLEET = Path(sys.executable).parent / "fedfleet"


def _with_main() -> set[str]:
    return {path.stem for path in (ROOT / "benchmarks").glob("*.py")
            if any(isinstance(node, ast.FunctionDef) and node.name == "main"
                   for node in ast.parse(path.read_text()).body)}


def test_listing_names_every_benchmark_from_any_folder(tmp_path):
    done = subprocess.run([FEDFLEET, "bench"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()[:-2] if line.strip()}
    assert listed == _with_main()
    assert {"scale", "releases", "gateway_rate", "round_close", "traffic"} <= listed
    assert "report" not in listed and "wire_fleet" not in listed  # helpers, no main


def test_a_benchmark_runs_with_its_options_and_prints_json_and_a_table(tmp_path):
    done = subprocess.run([FEDFLEET, "bench", "releases", "--vehicles", "2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(row["privacy"], row["vehicles"]) for row in rows[:2]] == [("central", 2),
                                                                       ("local", 2)]
    assert all(row["per_release_ms"] > 0 for row in rows[:2])
    header = next(line for line in done.stdout.splitlines() if "per_release_ms" in line
                  and not line.startswith("{"))
    assert header.split()[:2] == ["privacy", "vehicles"]


def test_an_unknown_benchmark_is_one_line_naming_the_others(capsys):
    assert cli.main(["bench", "scael"]) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no benchmark 'scael'" in err and "scale" in err


def test_a_benchmarks_usage_error_is_its_own_exit_2_and_argv_is_restored(capsys):
    argv = list(sys.argv)

    assert cli.main(["bench", "scale", "--regions", "-1"]) == 2

    assert "--regions must be 0 or more" in capsys.readouterr().err
    assert sys.argv == argv


def test_an_installed_package_without_the_checkout_says_where_benchmarks_are(monkeypatch,
                                                                             capsys):
    monkeypatch.setattr(bench, "checkout", lambda: None)

    assert cli.main(["bench"]) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "source checkout" in err and "make test" in err


def test_a_missing_test_extra_is_named_with_the_install_that_brings_it(monkeypatch, capsys):
    def missing(name: str) -> None:
        raise ModuleNotFoundError("No module named 'psutil'", name="psutil")

    monkeypatch.setattr(bench, "import_module", missing)

    assert cli.main(["bench", "scale"]) == 2

    err = capsys.readouterr().err.strip()
    assert "'psutil'" in err and "[test]" in err


@pytest.mark.parametrize("code, message, expected", [(None, None, 0), (3, None, 3),
                                                      ("only 5 of 9 connected", "only 5", 1)])
def test_a_benchmarks_own_exit_is_passed_on(monkeypatch, capsys, code, message, expected):
    class Module:
        @staticmethod
        def main() -> None:
            raise SystemExit(code)

    monkeypatch.setattr(bench, "import_module", lambda name: Module)

    assert cli.main(["bench", "scale"]) == expected
    if message:
        assert message in capsys.readouterr().err


def test_a_benchmark_that_fails_is_one_line_and_exit_1(monkeypatch, capsys):
    class Module:
        @staticmethod
        def main() -> None:
            raise TimeoutError("only 5 of 9 vehicles connected")

    monkeypatch.setattr(bench, "import_module", lambda name: Module)

    assert cli.main(["bench", "scale"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "scale failed: TimeoutError: only 5 of 9 vehicles connected" in err
    assert "python -m benchmarks.scale" in err


@pytest.mark.integration
def test_the_scale_benchmark_measures_a_real_fleet_and_says_where_it_is(tmp_path):
    done = subprocess.run([FEDFLEET, "bench", "scale", "--vehicles", "20", "--duration-s", "5",
                           "--anchor-readings", "200"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    [run] = report["runs"]
    assert run["connected"] == 20 and run["fleet_exit_code"] == 0
    assert run["sim_rate"] > 0.5 and run["fleet_us"] > 0 and run["rss_kib"] > 0
    assert run["received"] == run["sent"] and run["accepted"] == run["sent"]
    assert report["anchors"]["detector_us"] > 0
    steps = [line.split("] ", 1)[1] for line in done.stderr.splitlines()
             if line.startswith("[")]
    assert [step.split(":")[0] for step in steps] == [
        "the anchors, in this process", "20 vehicles", "20 of 20 connected", "measured"]
