"""``python -m aionetdicom <app> [options]``: run one of the command-line apps.

Apps are imported only when run, so listing them or running one stays fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

#: App name -> (module, one-line summary). New apps plug in here.
APPS: dict[str, tuple[str, str]] = {
    "echoscu": ("aionetdicom.apps.echoscu", "DICOM verification (C-ECHO) SCU"),
    "echoscp": ("aionetdicom.apps.echoscp", "DICOM verification (C-ECHO) SCP"),
    "storescu": ("aionetdicom.apps.storescu", "DICOM storage (C-STORE) SCU"),
    "storescp": ("aionetdicom.apps.storescp", "DICOM storage (C-STORE) SCP"),
    "findscu": ("aionetdicom.apps.findscu", "DICOM query (C-FIND) SCU"),
    "getscu": ("aionetdicom.apps.getscu", "DICOM retrieve (C-GET) SCU"),
    "movescu": ("aionetdicom.apps.movescu", "DICOM retrieve (C-MOVE) SCU"),
    "qrscp": ("aionetdicom.apps.qrscp", "DICOM storage and query/retrieve SCP (indexed)"),
}

PROG = "aionetdicom"


def usage() -> str:
    """The dispatcher's help text: how to call it and the apps it knows."""
    width = max(len(name) for name in APPS)
    lines = [
        f"usage: {PROG} <app> [options]   (or: python -m {PROG} <app> [options])",
        "",
        "apps:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in APPS.items()),
        "",
        f"Run '{PROG} <app> --help' for the options of one app.",
    ]
    return "\n".join(lines)


def load_app(name: str) -> Callable[[Sequence[str] | None], int]:
    """Import the app ``name`` and return its ``main``; KeyError when there is none."""
    module = importlib.import_module(APPS[name][0])
    return cast(Callable[[Sequence[str] | None], int], module.main)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to ``argv[0]``'s app with the remaining arguments; 2 for a usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        print(f"{PROG}: error: no app given", file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if name in ("-h", "--help", "help"):
        print(usage())
        return 0
    if name == "--version":
        from aionetdicom import __version__

        print(f"{PROG} {__version__}")
        return 0
    if name not in APPS:
        choices = ", ".join(APPS)
        print(f"usage: {PROG} <app> [options]", file=sys.stderr)
        print(f"{PROG}: error: unknown app {name!r} (choose from {choices})", file=sys.stderr)
        return 2
    return load_app(name)(rest)


if __name__ == "__main__":
    sys.exit(main())
