"""A new user's first ten minutes, followed literally: the documented commands, in their order
(README.md, then docs/getting-started.md)."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from otel_greenflash.testing import EventsApiServer
from tests.end_to_end.test_zero_code import APP as ZERO_CODE_APP
from tests.support.common import CONVERSATION_ID, PRODUCT_ID
from tests.support.ports import free_port
from tests.support.processes import clean_env, command, run, run_script

ROOT = Path(__file__).resolve().parents[2]


SEND = (
    "otel-greenflash send upgrade_purchased 149 --value-type currency "
    "--external-conversation-id chat-1"
)


def test_serve_prints_everything_the_documented_send_command_needs() -> None:
    serve = subprocess.Popen(
        [command("otel-greenflash"), "serve", "--port", str(free_port())],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        assert serve.stdout is not None
        lines = [serve.stderr.readline() for _ in range(4)]
        exports = next(line for line in lines if line.strip().startswith("export "))
        variables = dict(word.split("=", 1) for word in shlex.split(exports)[1:])
        assert set(variables) == {
            "GREENFLASH_BASE_URL",
            "GREENFLASH_API_KEY",
            "GREENFLASH_PRODUCT_ID",
        }
        # Getting started's next command, verbatim, with nothing but what serve printed.
        getting_started = " ".join((ROOT / "docs" / "getting-started.md").read_text().split())
        assert SEND in getting_started
        assert SEND in " ".join(" ".join(lines).split())  # serve shows it too
        send_args = shlex.split(SEND)
        result = run([command("otel-greenflash"), *send_args[1:]], clean_env(**variables))
        assert result.returncode == 0, result.stderr
        assert "sent 'upgrade_purchased'" in result.stdout
        printed = json.loads(serve.stdout.readline())  # serve prints each event it receives
        assert printed["eventType"] == "upgrade_purchased"
        assert printed["productId"] == variables["GREENFLASH_PRODUCT_ID"]
        assert printed["value"] == "149.00"  # currency in its d+.dd form
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()


APP = ZERO_CODE_APP  # the zero-code tests' application: OpenTelemetry API only


def test_zero_code_exporter_with_the_greenflash_sampler_at_ratio_zero(
    server: EventsApiServer, tmp_path: Path
) -> None:
    """Record-only spans never reach a batch processor; they are handed to the exporter."""
    env = clean_env(
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        OTEL_TRACES_EXPORTER="console,greenflash",
        OTEL_TRACES_SAMPLER="greenflash_parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    result = run_script(tmp_path, APP, env, command("opentelemetry-instrument"))
    assert result.returncode == 0, result.stderr
    assert '"name": "chat"' not in result.stdout  # still sampled out for the console
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID  # linked through the record-only root
    assert event["value"] == "149.00"


CODE_APP = (
    """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from otel_greenflash import GreenflashSampler, GreenflashSpanExporter

provider = TracerProvider(sampler=GreenflashSampler(TraceIdRatioBased(0), record_unsampled=True))
if ORDER == "exporter first":
    exporter = GreenflashSpanExporter()          # before the provider is global
    trace.set_tracer_provider(provider)
else:
    trace.set_tracer_provider(provider)
    exporter = GreenflashSpanExporter()
provider.add_span_processor(BatchSpanProcessor(exporter))
"""
    + APP
    + """
provider.shutdown()
"""
)


@pytest.mark.parametrize("order", ["exporter first", "provider first"])
def test_exporter_in_code_with_the_greenflash_sampler(
    server: EventsApiServer, tmp_path: Path, order: str
) -> None:
    env = clean_env(
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
    )
    result = run_script(tmp_path, f"ORDER = {order!r}\n" + CODE_APP, env)
    assert result.returncode == 0, result.stderr
    [event] = server.events
    assert event["conversationId"] == CONVERSATION_ID


def test_the_sampler_with_nothing_to_receive_its_spans_says_so(tmp_path: Path) -> None:
    source = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
    from otel_greenflash import GreenflashSampler

    provider = TracerProvider(sampler=GreenflashSampler(TraceIdRatioBased(0)))
    trace.set_tracer_provider(provider)
    with trace.get_tracer("x").start_as_current_span(
        "billing", attributes={"greenflash.event.type": "t", "greenflash.event.value": 1}
    ):
        pass
    """
    result = run_script(tmp_path, source, clean_env())
    assert result.returncode == 0, result.stderr
    assert "no GreenflashSpanProcessor is installed" in result.stderr


def test_the_readme_installs_from_what_exists(tmp_path: Path) -> None:
    """Not published yet: neither the README nor the documentation may send users to a package
    index, and the wheel command they give must build an installable wheel."""
    readme = (ROOT / "README.md").read_text()
    pages = [readme, *(page.read_text() for page in (ROOT / "docs").rglob("*.md"))]
    assert not any("pip install otel-greenflash" in page for page in pages)
    assert "python -m pip wheel --no-deps -w dist ." in readme
    assert (
        "python -m pip wheel --no-deps -w dist ."
        in (ROOT / "docs" / "getting-started.md").read_text()
    )
    result = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        clean_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("otel_greenflash-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(name for name in names if name.endswith("entry_points.txt"))
        assert "greenflash = otel_greenflash.exporter:GreenflashSpanExporter" in (
            archive.read(entry_points).decode()
        )
    assert "otel_greenflash/py.typed" in names


def test_exporters_coming_and_going_never_raise_into_span_end() -> None:
    """The record-only bridge is read at every span end while exporters register and leave on
    another thread (test suites, reconfiguration)."""
    import sys
    import threading

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    from otel_greenflash import GreenflashSampler
    from otel_greenflash._record_only import add_exporter, bridge, remove_exporter

    class Exporter:  # stands in for GreenflashSpanExporter: the bridge only keys on it
        def take(self, span: object) -> None:
            return None

    sampler = GreenflashSampler(TraceIdRatioBased(0), record_unsampled=True)
    provider = TracerProvider(sampler=sampler)
    bridge(provider)
    tracer = provider.get_tracer("race")
    resident = [Exporter() for _ in range(200)]  # a long registry to iterate
    for exporter in resident:
        add_exporter(exporter, exporter.take)
    errors: list[BaseException] = []
    stop = threading.Event()

    def app() -> None:
        while not stop.is_set():
            try:
                with tracer.start_as_current_span("step"):
                    pass
            except BaseException as error:
                errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=app) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(3000):
            passing = Exporter()
            add_exporter(passing, passing.take)
            remove_exporter(passing)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
        for exporter in resident:
            remove_exporter(exporter)
        provider.shutdown()
    assert errors == []
