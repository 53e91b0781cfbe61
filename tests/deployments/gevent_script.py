"""A monkey-patched script: ``DEPLOY_PATCHER`` (``gevent`` or ``eventlet``) patches first, then
it runs :mod:`tests.deployments.script` (emit 21 events, print ``emitted``, sleep)."""

from __future__ import annotations

import importlib
import os

# importlib: neither library ships type information.
if os.environ.get("DEPLOY_PATCHER", "gevent") == "eventlet":
    importlib.import_module("eventlet").monkey_patch()
else:
    importlib.import_module("gevent.monkey").patch_all()

from tests.deployments.script import main  # after patching, as users do

if __name__ == "__main__":
    main()
