"""A plain script: emit ``DEPLOY_EVENTS`` events (uids ``<DEPLOY_UID_PREFIX>-<i>``), then sleep
(``DEPLOY_BUSY``: compute for ten minutes first, never yielding).

Prints its SIGTERM disposition after setup, then ``emitted`` once every span has ended.
"""

from __future__ import annotations

import os
import signal
import time

from tests.deployments._events import emit
from tests.deployments._setup import describe, setup


def main() -> None:
    setup()
    print(f"sigterm={describe(signal.getsignal(signal.SIGTERM))}", flush=True)
    prefix = os.environ.get("DEPLOY_UID_PREFIX", "script")
    for i in range(int(os.environ.get("DEPLOY_EVENTS", "21"))):
        emit("script_step", f"{prefix}-{i}")
    print("emitted", flush=True)
    if os.environ.get("DEPLOY_BUSY"):  # CPU-bound, never yielding (to a green hub either)
        until = time.monotonic() + 600
        while time.monotonic() < until:
            sum(range(1000))
    time.sleep(60)


if __name__ == "__main__":
    main()
