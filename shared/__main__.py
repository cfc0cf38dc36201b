"""``python -m shared``: the CLI (see :mod:`shared.cli`).

Run with an interpreter that lacks the project's dependencies (the system ``python3`` rather than
``.venv/bin/python``), the CLI answers with one ``✗`` line saying how to get them, not a traceback.
"""

import sys


def _missing(exc: ModuleNotFoundError) -> int:
    module = (exc.name or "?").split(".")[0]
    print(f"✗ Python module {module!r} is missing: {sys.executable} does not have the project's dependencies; "
          "run 'bash .ci/setup' once, then use .venv/bin/python -m shared ...", file=sys.stderr)
    return 1


def _run() -> int:
    try:
        from .cli import main

        return main()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == __package__:
            raise  # a bug of ours, not a missing dependency
        return _missing(exc)


sys.exit(_run())
