"""Module-level tasks for the job-pool tests (spawned workers import them by name)."""

from __future__ import annotations

import os
import time
from typing import Any


def double(spec: dict[str, Any]) -> dict[str, Any]:
    return {"value": 2 * spec["x"], "pid": os.getpid()}


def fail(spec: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"bad input {spec['x']}")


def sleep(spec: dict[str, Any]) -> dict[str, Any]:
    time.sleep(spec["seconds"])
    return {"slept": spec["seconds"]}


def die(spec: dict[str, Any]) -> dict[str, Any]:
    os._exit(3)


def record_pid_and_sleep(spec: dict[str, Any]) -> dict[str, Any]:
    # write then rename: the test polls for the file and must never read it half-written
    tmp = f"{spec['pidfile']}.tmp"
    with open(tmp, "w") as file:
        file.write(str(os.getpid()))
    os.replace(tmp, spec["pidfile"])
    time.sleep(spec["seconds"])
    return {}
