"""A plain script: emit ``DEPLOY_EVENTS`` events (uids ``<DEPLOY_UID_PREFIX>-<i>``), then sleep.

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
    time.sleep(60)


if __name__ == "__main__":
    main()
