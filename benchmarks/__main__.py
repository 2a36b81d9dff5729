"""Run benchmarks by name: `python -m benchmarks metrics sampling dpo [--options]`, or `all` (no name: list them).

Each benchmark is a module `benchmarks/bench_<name>.py` exposing `main(argv: list[str]) -> None`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    # names come first; everything from the first option on goes to each benchmark, so that an
    # option's separate value (`-S key=value`) stays with it
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, extra = argv[:first_option], argv[first_option:]
    if not names or names == ["--help"]:
        print("usage: python -m benchmarks NAME [NAME ...] [--options passed to each]")
        print("available:", ", ".join(available()) or "(none)")
        return 0
    if names == ["all"]:
        names = available()
    for name in names:
        if name not in available():
            print(f"unknown benchmark '{name}'; available: {', '.join(available())}", file=sys.stderr)
            return 2
        print(f"== benchmark: {name} ==", flush=True)
        importlib.import_module(f"benchmarks.bench_{name}").main(extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
