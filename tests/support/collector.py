"""A real OpenTelemetry Collector, built from its Go modules, run as a subprocess on loopback.

The build recipe is ``tests/collector/distribution`` (``go.mod``, ``go.sum``, ``main.go``);
:func:`collector_binary` builds it once per change of the recipe (Go's module and build caches
make a rebuild a few seconds). The configurations come verbatim from ``docs/gateway.md``
(:func:`documented_config`); a test adds only an overlay of loopback addresses, ports and
directories, given to the Collector as a second ``--config``, which it merges over the first.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

from tests.support.gateway_harness import TOKEN
from tests.support.ports import free_port
from tests.support.processes import LoggedProcess, clean_env

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = ROOT / "tests" / "collector" / "distribution"
BINARY = DISTRIBUTION / ".build" / "otelcol"
GATEWAY_DOC = ROOT / "docs" / "gateway.md"
REQUIRED = "GREENFLASH_TESTS_REQUIRE_COLLECTOR"
"""Set (by .ci/run) to make a missing Go toolchain fail the Collector tests instead of skip."""
VERSION = "v0.161.0"
READY = "Everything is ready"
STARTUP_SECONDS = 60.0
BUILD_SECONDS = 1800.0
GO_HOME_BIN = "/usr/local/go/bin"
"""Where Go's own installer puts ``go``, which a non-login shell may not have on PATH."""


def collector_binary() -> Path:
    """The built Collector; built first when the recipe changed (one build for all workers)."""
    go = shutil.which("go") or shutil.which("go", path=GO_HOME_BIN)
    if go is None:
        message = (
            "the Collector tests need Go to build the Collector (tests/collector/distribution)"
        )
        if os.environ.get(REQUIRED):
            pytest.fail(message)
        pytest.skip(message)
    BINARY.parent.mkdir(exist_ok=True)
    with open(BINARY.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _fresh():
            built = subprocess.run(
                [go, "build", "-trimpath", "-o", str(BINARY), "."],
                cwd=DISTRIBUTION,
                capture_output=True,
                text=True,
                timeout=BUILD_SECONDS,
                check=False,
            )
            assert built.returncode == 0, f"building the Collector failed:\n{built.stderr}"
    return BINARY


def _fresh() -> bool:
    if not BINARY.exists():
        return False
    built = BINARY.stat().st_mtime
    return all(path.stat().st_mtime < built for path in DISTRIBUTION.iterdir() if path.is_file())


def merged(base: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each layer merged over it as the Collector merges ``--config`` files:
    maps key by key, anything else (lists included) replaced."""
    result = dict(base)
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def documented_config(name: str) -> str:
    """The YAML block after ``<!-- collector-config: NAME -->`` in docs/gateway.md, verbatim."""
    text = GATEWAY_DOC.read_text()
    marker = f"<!-- collector-config: {name} -->"
    assert marker in text, f"docs/gateway.md has no {marker}"
    found = re.match(r"\s*```yaml\n(.*?)\n```", text.split(marker, 1)[1], re.DOTALL)
    assert found is not None, f"no ```yaml block right after {marker}"
    return found.group(1) + "\n"


class Collector(LoggedProcess):
    """One Collector subprocess: ``configs`` (YAML texts, merged in order) under an overlay
    that puts its OTLP receiver on free loopback ports and turns its own metrics server off
    (several Collectors run side by side)."""

    def __init__(
        self,
        directory: Path,
        configs: Sequence[str],
        *,
        overlay: Mapping[str, Any] | None = None,
        token: str | None = TOKEN,
        environment: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.launcher = list(launcher)
        """A command the Collector runs under (it must exec it), e.g. one entering namespaces."""
        self.configs = list(configs)
        self.overlay = dict(overlay or {})
        self.token = token
        self.environment = dict(environment or {})
        self.grpc_port = free_port()
        self.http_port = free_port()
        super().__init__()
        self._port_retries = 0
        self._starts = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _write_configs(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        files = []
        for index, text in enumerate(self.configs):
            path = self.directory / f"config-{index}.yaml"
            path.write_text(text)
            files.append(path)
        ports = {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": self.grpc_endpoint},
                        "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
                    }
                }
            },
            "service": {"telemetry": {"metrics": {"level": "none"}}},
        }
        for index, layer in enumerate((ports, self.overlay)):
            path = self.directory / f"overlay-{index}.yaml"
            path.write_text(yaml.safe_dump(layer))
            files.append(path)
        return [argument for path in files for argument in ("--config", f"file:{path}")]

    def start(self) -> Collector:
        """Start and wait for "Everything is ready"; a Collector that ends first or is not
        ready in time is killed and an AssertionError says why."""
        self._starts += 1
        env = clean_env(**self.environment)
        if self.token:
            env["GREENFLASH_GATEWAY_TOKEN"] = self.token
        self._log.seek(0, os.SEEK_END)
        offset = self._log.tell()
        self.process = subprocess.Popen(
            [*self.launcher, str(collector_binary()), *self._write_configs()],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if READY in self._output_since(offset):
                return self
            if self.process.poll() is not None:
                if self._lost_its_ports():
                    return self.start()
                raise AssertionError(f"the Collector ended at start:\n{self.output()}")
            time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        raise AssertionError(f"the Collector was not ready:\n{self.output()}")

    def _output_since(self, offset: int) -> str:
        self._log.seek(offset)
        return self._log.read().decode(errors="replace")

    def _lost_its_ports(self) -> bool:
        """A first start whose probed port another process took first: draw new ports."""
        if self._starts > 1 or self._port_retries >= 5:
            return False
        if "address already in use" not in self.output():
            return False
        self._port_retries += 1
        self._starts = 0
        self.grpc_port = free_port()
        self.http_port = free_port()
        return True

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close_log()
