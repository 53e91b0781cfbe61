"""Run ``otel-greenflash gateway`` as a real subprocess, and OTLP clients to talk to it.

The gateway delivers to the tests' independent receiver (:mod:`tests.support.independent_receiver`),
which shares no code with the library.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from tests.support.common import PRODUCT_ID
from tests.support.independent_receiver import Receiver
from tests.support.ports import free_port
from tests.support.processes import BIN, LoggedProcess, clean_env

TOKEN = "gw-test-token-0123456789abcdef"
STARTUP_SECONDS = 60.0


class Gateway(LoggedProcess):
    """One gateway subprocess (``python -m otel_greenflash.cli gateway``) on free ports.

    ``environment`` adds ``GREENFLASH_*`` variables; the receiver's URL and key are set.
    """

    def __init__(
        self,
        receiver: Receiver,
        spool_dir: Path,
        *,
        args: Sequence[str] = (),
        token: str | None = None,
        environment: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.receiver = receiver
        self.tls = tls
        """``(certificate, key)`` files: the gateway serves TLS, clients trust the certificate."""
        self.spool_dir = spool_dir
        self.token = token
        self.http_port = free_port()
        self.grpc_port = free_port()
        self._args = list(args)
        self._environment = environment or {}
        super().__init__()
        self._starts = 0
        self._port_retries = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should trust for this gateway."""
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self) -> Gateway:
        """Start and wait until ``/healthz`` answers (or the process ends: AssertionError)."""
        self._starts += 1
        env = clean_env(
            GREENFLASH_API_KEY=self.receiver.api_key,
            GREENFLASH_BASE_URL=self.receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_BSP_SCHEDULE_DELAY="20",
            **self._environment,
        )
        if self.token:
            env["GREENFLASH_GATEWAY_TOKEN"] = self.token
        command = [
            str(BIN / "python"),
            "-m",
            "otel_greenflash.cli",
            "gateway",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--spool-dir",
            str(self.spool_dir),
            *self._args,
        ]
        if self.tls:
            command += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.spool_dir.parent
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self._lost_its_ports():
                return self.start()
            assert self.process.poll() is None, f"gateway ended at start:\n{self.output()}"
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify)
                if answer.status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"gateway did not answer /healthz:\n{self.output()}")

    def _lost_its_ports(self) -> bool:
        """A first start that found a port taken: ``free_port`` only probes, and under parallel
        test workers another process (a client's ephemeral port) can take it before the
        gateway binds. Draw new ports for a retry; a restart keeps its ports (clients know
        them), so it fails as before."""
        if self._starts > 1 or self._port_retries >= 5 or "port is in use" not in self.output():
            return False
        self._port_retries += 1
        self._starts = 0
        self.http_port = free_port()
        self.grpc_port = free_port()
        self._log.seek(0)
        self._log.truncate()
        return True

    def stats(self) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/stats", headers=self.headers, timeout=10, verify=self.verify
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close_log()


@contextlib.contextmanager
def tracing(exporter: SpanExporter, service: str = "app") -> Iterator[TracerProvider]:
    """A provider that exports each span as it ends, one request per span."""
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


@contextlib.contextmanager
def logging_to(exporter: LogRecordExporter) -> Iterator[LoggerProvider]:
    provider = LoggerProvider(resource=Resource({"service.name": "app"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def http_exporters(gateway: Gateway) -> tuple[HttpSpans, HttpLogs]:
    """The SDK's OTLP/HTTP protobuf exporters aimed at ``gateway``."""
    trust = str(gateway.tls[0]) if gateway.tls else None
    options: dict[str, Any] = {"headers": gateway.headers, "timeout": 30, "certificate_file": trust}
    return (
        HttpSpans(endpoint=f"{gateway.url}/v1/traces", **options),
        HttpLogs(endpoint=f"{gateway.url}/v1/logs", **options),
    )


def grpc_exporters(gateway: Gateway) -> tuple[GrpcSpans, GrpcLogs]:
    """The SDK's OTLP/gRPC exporters aimed at ``gateway``."""
    options: dict[str, Any] = {"endpoint": gateway.grpc_endpoint, "timeout": 30}
    if gateway.token:
        options["headers"] = {"authorization": f"Bearer {gateway.token}"}
    if gateway.tls:
        root = gateway.tls[0].read_bytes()
        options["credentials"] = grpc.ssl_channel_credentials(root_certificates=root)
    else:
        options["insecure"] = True
    return GrpcSpans(**options), GrpcLogs(**options)


def self_signed_certificate(directory: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1 and localhost made with the openssl command (None when
    there is no openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key
