"""Process and thread counts: an integer >= 1, or `auto` for the cores this process may run on.

`auto` is resolved when params are loaded (len(os.sched_getaffinity(0)), else os.cpu_count()),
so an 8-core laptop gets 8 workers and a job pinned to 2 cores (taskset, a scheduler's cpuset)
gets 2. Dumped params carry the number that ran.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BeforeValidator

AUTO = "auto"


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports one, else all CPUs."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS or Windows
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_count(value):
    """`auto` -> available_cores(); an int >= 1 as is; anything else (bools, floats, '4') is an error."""
    if isinstance(value, str) and value == AUTO:
        return available_cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1 or '{AUTO}' (the cores available to the process)")
    return value


CoreCount = Annotated[int, BeforeValidator(resolve_count)]
