"""Fuzz every HTTP function much longer than CI does: ``tests/test_fuzz_http.py`` with
``FUZZ_EXAMPLES`` examples per function (default 2,000; CI runs 300), then prints, per function, the
examples run, the answers by status and the time taken.

    .venv/bin/python -m bench.fuzz_http [--examples N] [-k EXPR]

A failure prints hypothesis' shrunk example and exits 1, as the test does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Report:
    def __init__(self):
        self.rows: list[tuple[str, dict, float, str]] = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            statuses = dict(report.user_properties).get("statuses", {})
            self.rows.append((report.nodeid.split("[")[-1].rstrip("]"), statuses, report.duration, report.outcome))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per HTTP function (default 2000)")
    parser.add_argument("-k", default="documented_answers", help="pytest -k expression (default: every function)")
    args = parser.parse_args(argv)
    os.environ["FUZZ_EXAMPLES"] = str(args.examples)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import pytest

    report = _Report()
    started = time.monotonic()
    code = pytest.main(["-q", "--show-capture=no", "-p", "no:cacheprovider", "tests/test_fuzz_http.py", "-k", args.k],
                       plugins=[report])
    print(f"\n{'function':<26} {'examples':>8} {'seconds':>8}  answers by status")
    for name, statuses, seconds, outcome in report.rows:
        total = sum(statuses.values())
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) or "-"
        print(f"{name:<26} {total:>8} {seconds:>8.1f}  {shown}{'' if outcome == 'passed' else '  ' + outcome.upper()}")
    print(f"total {time.monotonic() - started:.0f} s, {args.examples} examples per function requested")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
