"""A monkey-patched script: ``DEPLOY_PATCHER`` (``gevent`` or ``eventlet``) patches first, then
it runs :mod:`tests.deployments.script` (emit 21 events, print ``emitted``, sleep)."""

from __future__ import annotations

import os

if os.environ.get("DEPLOY_PATCHER", "gevent") == "eventlet":
    import eventlet

    eventlet.monkey_patch()
else:
    from gevent import monkey

    monkey.patch_all()

from tests.deployments.script import main  # after patching, as users do

if __name__ == "__main__":
    main()
