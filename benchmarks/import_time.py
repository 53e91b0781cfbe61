"""Scenario 11: what ``import otel_greenflash`` adds to an app that already imports the OTel SDK.

One measurement per fresh interpreter, which imports ``opentelemetry.sdk.trace`` (timed: the
baseline), then ``otel_greenflash`` (timed: ours)::

    python -m benchmarks.import_time [ROUNDS [BASE_TREE]]

Modules come from bytecode caches as in a deployed app (the caches go to a temporary
``PYTHONPYCACHEPREFIX``, filled by one unmeasured run first). Rounds alternate between this
tree and, when given, another checkout (``--base``: e.g. the commit before a change, put
first on ``PYTHONPATH``); medians are reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

NETWORK_MODULES = ("httpx", "httpcore", "aiohttp", "httpx_aiohttp")
"""The HTTP stack, imported only once a processor starts delivering."""


CHILD = """
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
import opentelemetry.sdk.trace
sdk_done, sdk_cpu = time.perf_counter(), time.process_time()
import otel_greenflash
ours_done, ours_cpu = time.perf_counter(), time.process_time()
network = [name for name in NETWORK_MODULES if name in sys.modules]
print(json.dumps({
    "sdk_ms": (sdk_done - started) * 1e3,
    "ours_ms": (ours_done - sdk_done) * 1e3,
    "sdk_cpu_ms": (sdk_cpu - cpu_started) * 1e3,
    "ours_cpu_ms": (ours_cpu - sdk_cpu) * 1e3,
    "network_modules": float(len(network)),
}))
"""
"""Run with ``python -c`` in an empty directory: nothing but the interpreter's own start-up is
loaded before the clock starts (ms: wall clock, and the process's CPU time)."""


def _run(tree: str, cache: str) -> dict[str, float]:
    """One fresh interpreter importing from ``tree`` first."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GREENFLASH_", "OTEL_")) and key != "PYTHONDONTWRITEBYTECODE"
    }
    environ["PYTHONPATH"] = tree
    environ["PYTHONPYCACHEPREFIX"] = cache
    code = f"NETWORK_MODULES = {NETWORK_MODULES!r}\n{CHILD}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=cache,  # not a source tree: ``-c`` puts the working directory first on sys.path
        env=environ,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def measure(rounds: int, base_tree: str | None = None) -> dict[str, dict[str, float]]:
    """Medians over ``rounds`` interleaved runs: ``ours`` (this tree) and ``base`` (if given)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"ours": here}
    if base_tree:
        trees["base"] = os.path.abspath(base_tree)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="greenflash-pyc-") as cache:
        for tree in trees.values():
            _run(tree, cache)  # fills the bytecode cache, not measured
        for _ in range(rounds):
            for name, tree in trees.items():
                runs[name].append(_run(tree, cache))
    return {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }


if __name__ == "__main__":  # python -m benchmarks.import_time [ROUNDS [BASE_TREE]]
    print(json.dumps(measure(int(sys.argv[1]) if sys.argv[1:] else 9, *sys.argv[2:3])))
