"""A monkey-patched script that forks after configure(), twice: ``DEPLOY_PATCHER`` (``gevent``
or ``eventlet``) patches first.

Each of the three generations prints ``pipes <generation> <pid> <inodes>`` (the pipes it has
open besides stdin, stdout and stderr) once its pipeline has delivered; the first two then
fork. The last child emits ``DEPLOY_EVENTS`` events, prints ``emitted <generation> <pid>`` and
sleeps, holding them; each parent waits for its child, prints ``child <pid> ended <code>``,
then does the same. Uids are ``<DEPLOY_UID_PREFIX>-<generation>-<i>``.
"""

from __future__ import annotations

import importlib
import os

# importlib: neither library ships type information.
if os.environ.get("DEPLOY_PATCHER", "gevent") == "eventlet":
    importlib.import_module("eventlet").monkey_patch()
else:
    importlib.import_module("gevent.monkey").patch_all()

import time  # after patching, as users do

from opentelemetry import trace

from tests.deployments._events import emit
from tests.deployments._setup import setup

FORKS = 2


def open_pipes() -> list[str]:
    """Inodes of the pipes this process has open, stdin, stdout and stderr left out."""
    inodes = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        if int(name) > 2 and target.startswith("pipe:"):
            inodes.append(target.removeprefix("pipe:[").removesuffix("]"))
    return sorted(inodes)


def main() -> None:
    setup()
    prefix = os.environ["DEPLOY_UID_PREFIX"]
    generation = 0
    while True:
        emit("fork_generation", f"{prefix}-{generation}-start")
        trace.get_tracer_provider().force_flush(10_000)  # type: ignore[attr-defined]
        print(f"pipes {generation} {os.getpid()} {','.join(open_pipes())}", flush=True)
        if generation == FORKS:
            break
        pid = os.fork()
        if pid == 0:
            generation += 1
            continue
        _, status = os.waitpid(pid, 0)
        print(f"child {pid} ended {os.waitstatus_to_exitcode(status)}", flush=True)
        break
    for i in range(int(os.environ.get("DEPLOY_EVENTS", "10"))):
        emit("script_step", f"{prefix}-{generation}-{i}")
    print(f"emitted {generation} {os.getpid()}", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
