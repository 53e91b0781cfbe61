"""The spool's filesystem fills up, then space is freed: a passing state, not the end.

Both the gateway and a library app run on a real small filesystem (a tmpfs mounted in a user
namespace of their own, so no root is needed). The test fills it, checks what is refused or
kept in memory while it is full, frees the space, and checks that the spool resumes by itself
and that every acknowledged event reaches the Events API once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.support.common import PRODUCT_ID
from tests.support.gateway_harness import STARTUP_SECONDS, Gateway
from tests.support.independent_receiver import Fault, Receiver
from tests.support.processes import BIN, clean_env

ROOT = Path(__file__).resolve().parents[2]
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
WAIT_SECONDS = 60.0
"""Deadline for what should happen soon (never a measured duration)."""
FILESYSTEM_KIB = 1024
API_DOWN = Fault.status(503, {"Retry-After": "1"})


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _namespaces_work(),
    reason="needs Linux user namespaces (unshare -Urm) to mount a small tmpfs",
)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_small_filesystem(directory: Path, command: list[str]) -> list[str]:
    """``command`` run with a ``FILESYSTEM_KIB`` tmpfs mounted on ``directory``, seen only by
    that process (its own user and mount namespaces)."""
    mount = f"mount -t tmpfs -o size={FILESYSTEM_KIB}k tmpfs {directory}"
    return ["unshare", "-Urm", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem is full; return the bytes written."""
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    written += os.write(descriptor, b"\0" * size)
    finally:
        os.close(descriptor)
    return written


# -- the gateway ---------------------------------------------------------------------------------


class SmallDiskGateway(Gateway):
    """The gateway with its spool directory on a small tmpfs of its own; the test reaches the
    mount through ``/proc/<pid>/root``."""

    def start(self) -> SmallDiskGateway:
        self._starts += 1
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            GREENFLASH_API_KEY=self.receiver.api_key,
            GREENFLASH_BASE_URL=self.receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_BSP_SCHEDULE_DELAY="20",
            **self._environment,
        )
        gateway = [
            str(BIN / "python"), "-m", "otel_greenflash.cli", "gateway",
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--spool-dir", str(self.spool_dir),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            in_small_filesystem(self.spool_dir, gateway),
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self._lost_its_ports():
                return self.start()
            assert self.process.poll() is None, f"gateway ended at start:\n{self.output()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"gateway did not become ready:\n{self.output()}")

    def __enter__(self) -> SmallDiskGateway:
        return self.start()

    @property
    def mounted(self) -> Path:
        """The spool directory as the gateway sees it (its tmpfs)."""
        assert self.process is not None
        return Path(f"/proc/{self.process.pid}/root") / self.spool_dir.relative_to("/")


def trace_with_event(insert_id: str) -> bytes:
    """One root span carrying one business event with ``insert_id`` (OTLP protobuf)."""

    def text(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    span = Span(
        trace_id=uuid.uuid4().bytes,
        span_id=os.urandom(8),
        name="billing.upgrade",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=[
            text("greenflash.event.type", "upgrade_purchased"),
            text("greenflash.event.value", "149.00"),
            text("greenflash.event.value_type", "currency"),
            text("greenflash.event.insert_id", insert_id),
            text("greenflash.event.properties.padding", "p" * 2000),  # fills the disk sooner
            text("gen_ai.conversation.id", "full-disk-chat"),
        ],
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return bytes(request.SerializeToString())


def post(gateway: Gateway, insert_id: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/traces",
        content=trace_with_event(insert_id),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )


def test_gateway_refuses_while_full_and_resumes_when_space_returns(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    refused: list[str] = []
    with Receiver() as receiver, SmallDiskGateway(receiver, tmp_path / "spool") as gateway:
        receiver.mix({API_DOWN: 1.0}, seed=0)  # events stay in the spool
        for number in range(5):
            assert post(gateway, f"before-{number}").status_code == 200
            acknowledged.append(f"before-{number}")
        filler = gateway.mounted / "filler"
        assert fill(filler) > 0
        # The spool file may still have room inside: post until the gateway refuses.
        for number in range(500):
            insert_id = f"filling-{number}"
            answer = post(gateway, insert_id)
            if answer.status_code != 200:
                refused.append(insert_id)
                break
            acknowledged.append(insert_id)
        assert refused, "the gateway never found the filesystem full"
        assert answer.status_code == 503, gateway.output()
        assert int(answer.headers["Retry-After"]) >= 1

        # While full: refused up front, not ready (with the reason), alive.
        answer = post(gateway, "while-full")
        refused.append("while-full")
        assert answer.status_code == 503
        assert int(answer.headers["Retry-After"]) >= 1
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "full" in ready.json()["reason"]
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
        with (
            grpc.insecure_channel(gateway.grpc_endpoint) as channel,
            pytest.raises(grpc.RpcError) as refusal,
        ):
            channel.unary_unary(TRACES)(trace_with_event("grpc-while-full"), timeout=30)
        assert refusal.value.code() == grpc.StatusCode.UNAVAILABLE
        trailers = dict(refusal.value.trailing_metadata() or ())
        assert "google.rpc.retryinfo-bin" in trailers
        refused.append("grpc-while-full")
        # The API is back: what was acknowledged goes out while the disk is still full.
        assert not receiver.accepted
        receiver.clear_faults()
        assert receiver.wait_for(len(acknowledged), timeout=WAIT_SECONDS)
        assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 503
        assert gateway.stats()["pipeline"]["spool"]["disk_full"] == 1

        filler.unlink()  # space is back: no restart, no request needed
        wait_until(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200,
            "readyz to answer 200 again",
        )
        for insert_id in refused:  # the senders retry what was refused
            assert post(gateway, insert_id).status_code == 200
            acknowledged.append(insert_id)
        for number in range(3):
            assert post(gateway, f"after-{number}").status_code == 200
            acknowledged.append(f"after-{number}")
        wait_until(lambda: len(receiver.accepted) >= len(acknowledged), "every event delivered")
        wait_until(lambda: gateway.stats()["spool"]["depth"] == 0, "the spool emptied")
        stats = gateway.stats()
    delivered = receiver.accepted_insert_ids
    assert sorted(delivered) == sorted(acknowledged), gateway.output()
    assert receiver.duplicates == 0
    assert "is full" in gateway.output()
    print(f"refused while full: {len(refused)}, delivered: {len(delivered)}, stats: {stats}")


def trace_with_llm_call(conversation: str) -> bytes:
    """One root span that is an LLM call (OpenTelemetry GenAI form) naming its conversation and
    user: one Messages API request of two messages, and no business event (OTLP protobuf)."""

    def text(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    question = [{"role": "user", "parts": [{"type": "text", "content": f"{conversation}?"}]}]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "p" * 2000}]}]
    span = Span(
        trace_id=uuid.uuid4().bytes,
        span_id=os.urandom(8),
        name="chat gpt-4o-mini",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=[
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.input.messages", json.dumps(question)),
            text("gen_ai.output.messages", json.dumps(answer)),  # fills the disk sooner
            text("greenflash.conversation.external_id", conversation),
            text("greenflash.user.external_id", "user-1"),
        ],
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return bytes(request.SerializeToString())


def test_gateway_acknowledges_llm_calls_only_once_spooled(tmp_path: Path) -> None:
    """Conversation capture on, a batch with LLM calls and no business event: the batch whose
    messages request the full disk kept out of the spool is refused (503), not acknowledged and
    lost; every acknowledged call's messages arrive once space is back."""
    acknowledged: list[str] = []
    capture = {"GREENFLASH_CAPTURE_CONVERSATIONS": "true"}
    with (
        Receiver() as receiver,
        SmallDiskGateway(receiver, tmp_path / "spool", environment=capture) as gateway,
    ):
        receiver.mix({API_DOWN: 1.0}, seed=0)  # requests stay in the spool

        def post_call(conversation: str) -> httpx.Response:
            return httpx.post(
                f"{gateway.url}/v1/traces",
                content=trace_with_llm_call(conversation),
                headers={"Content-Type": "application/x-protobuf"},
                timeout=30,
            )

        for number in range(3):
            assert post_call(f"before-{number}").status_code == 200
            acknowledged.append(f"before-{number}")
        filler = gateway.mounted / "filler"
        assert fill(filler) > 0
        for number in range(500):
            answer = post_call(f"filling-{number}")
            if answer.status_code != 200:
                break
            acknowledged.append(f"filling-{number}")
        assert answer.status_code == 503, gateway.output()
        filler.unlink()
        wait_until(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200,
            "readyz to answer 200 again",
        )
        receiver.clear_faults()
        wait_until(
            lambda: receiver.stored_messages >= 2 * len(acknowledged), "every message stored"
        )
        wait_until(lambda: gateway.stats()["spool"]["depth"] == 0, "the spool emptied")
    stored = sorted(thread["externalConversationId"] for thread in receiver.conversations)
    assert stored == sorted(acknowledged), gateway.output()
    assert receiver.stored_messages == 2 * len(acknowledged)
    assert receiver.accepted == []


def test_gateway_healthz_fails_when_its_spool_file_is_removed(tmp_path: Path) -> None:
    """A full disk is no reason to restart; a spool file that is gone is one."""
    with Receiver() as receiver, SmallDiskGateway(receiver, tmp_path / "spool") as gateway:
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
        for spool_file in gateway.mounted.glob("spool-*.db"):
            spool_file.unlink()
        answer = httpx.get(f"{gateway.url}/healthz", timeout=10)
        assert answer.status_code == 503
        assert "removed" in answer.json()["reason"]


# -- a library app -------------------------------------------------------------------------------

APP_PRELUDE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from opentelemetry.sdk.trace import TracerProvider
from otel_greenflash import GreenflashSpanProcessor

spool_dir = {spool_dir!r}
processor = GreenflashSpanProcessor(schedule_delay_seconds=0.02)
provider = TracerProvider()
provider.add_span_processor(processor)
tracer = provider.get_tracer("app")

def wait(predicate):
    deadline = time.monotonic() + 30
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)

def fill(path):
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for size in (65536, 4096, 512, 1):
        try:
            while True:
                os.write(descriptor, b"\\0" * size)
        except OSError:
            pass
    os.close(descriptor)
"""
"""What both library apps start with: a processor on the spool, and helpers to wait and to
fill the file system."""

APP = (
    APP_PRELUDE
    + """
padding = "p" * 2000

def event(insert_id):
    with tracer.start_as_current_span("purchase") as span:
        span.set_attributes({{"greenflash.event.type": "upgrade_purchased",
                             "greenflash.event.value": "149.00",
                             "greenflash.event.value_type": "currency",
                             "greenflash.event.insert_id": insert_id,
                             "greenflash.event.properties.padding": padding,
                             "gen_ai.conversation.id": "library-chat"}})

report = {{}}
event("before")
wait(lambda: (processor.stats()["spool"] or {{}}).get("pending"))
fill(os.path.join(spool_dir, "filler"))
sent = ["before"]
for number in range(300):
    event(f"full-{{number}}")
    sent.append(f"full-{{number}}")
    # The API is down: events stay in the spool, until it cannot take one more.
    spool = lambda: processor.stats()["spool"] or {{"off": 1}}
    wait(lambda: spool().get("disk_full") or spool().get("off") or spool()["pending"] >= len(sent))
    if spool().get("disk_full") or spool().get("off"):
        break
report["while_full"] = processor.stats()["spool"]
print("full", flush=True)
sys.stdin.readline()  # the test brings the API back
for number in range(5):  # kept in memory, sent from there
    event(f"more-{{number}}")
    sent.append(f"more-{{number}}")
assert processor.force_flush(30000)
report["memory"] = processor.stats()["spool"]
os.unlink(os.path.join(spool_dir, "filler"))
wait(lambda: not (processor.stats()["spool"] or {{}}).get("disk_full", 1))
for number in range(5):  # spooled again
    event(f"after-{{number}}")
    sent.append(f"after-{{number}}")
assert processor.force_flush(30000)
report["after"] = processor.stats()["spool"]
report["sent"] = sent
provider.shutdown()
print(json.dumps(report), flush=True)
"""
)


def test_library_keeps_sending_while_full_and_spools_again_after(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP.format(root=str(ROOT), spool_dir=str(spool_dir))))
    with Receiver() as receiver:
        env = clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_SPOOL_DIR=str(spool_dir),
        )
        receiver.mix({API_DOWN: 1.0}, seed=0)
        app = subprocess.Popen(
            in_small_filesystem(spool_dir, [sys.executable, str(script)]),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None
            assert app.stdin is not None
            phase = app.stdout.readline()  # "full" once the disk filled up
            receiver.clear_faults()
            app.stdin.write("go\n")
            app.stdin.flush()
            out, err = app.communicate(timeout=120)
        finally:
            if app.poll() is None:
                app.kill()
                app.wait()
        assert app.returncode == 0, err
        assert phase == "full\n", err
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        delivered = receiver.accepted_insert_ids
        duplicates = receiver.duplicates
    print(report["while_full"], report["memory"], report["after"], len(delivered))
    while_full = report["while_full"]
    assert while_full is not None, err
    assert while_full["disk_full"] == 1, err
    assert while_full["unspooled"] >= 1
    after = report["after"]
    assert after is not None, "the spool was switched off for good"
    assert after["disk_full"] == 0
    assert after["pending"] == 0
    assert after["unspooled"] == report["memory"]["unspooled"], "spooled again after"
    assert report["memory"]["unspooled"] >= 5  # the events sent from memory, counted
    assert sorted(delivered) == sorted(report["sent"])
    assert duplicates == 0
    assert "is full" in err
    assert "space is back" in err


# -- telling a full disk from one with room again ------------------------------------------------

PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
from otel_greenflash._event import BusinessEvent
from otel_greenflash._lane.spool import Spool, disk_full

spool = Spool({spool_dir!r})
descriptor = os.open(os.path.join({spool_dir!r}, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
for size in (65536, 4096, 512, 1):
    try:
        while True:
            os.write(descriptor, b"\\0" * size)
    except OSError:
        pass
os.close(descriptor)
body = {{"insertId": "x", "padding": "p" * 20000}}
outcomes = []
for attempt in ("add", "probe", "probe", "probe"):
    try:
        if attempt == "add":
            spool.add([BusinessEvent(body, "x", "span")])
        else:
            spool.probe_write()
        outcomes.append([attempt, "ok"])
    except Exception as error:
        outcomes.append([attempt, "full" if disk_full(error) else repr(error)])
os.unlink(os.path.join({spool_dir!r}, "filler"))
try:
    spool.probe_write()
    outcomes.append(["probe after freeing", "ok"])
except Exception as error:
    outcomes.append(["probe after freeing", repr(error)])
print(json.dumps(outcomes))
"""


def test_write_probe_fails_while_the_filesystem_is_still_full(tmp_path: Path) -> None:
    """The probe that decides that space is back must need new space, like a real write."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE.format(root=str(ROOT), spool_dir=str(spool_dir))))
    done = subprocess.run(
        in_small_filesystem(spool_dir, [sys.executable, str(script)]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    print(outcomes)
    assert outcomes == [
        ["add", "full"],
        ["probe", "full"],
        ["probe", "full"],
        ["probe", "full"],
        ["probe after freeing", "ok"],
    ]


def fill_until_refused(gateway: SmallDiskGateway) -> list[str]:
    """Fill the gateway's filesystem, then post until it refuses; return what it took."""
    assert fill(gateway.mounted / "filler") > 0
    acknowledged: list[str] = []
    for number in range(500):  # the spool file may still have room inside
        insert_id = f"filling-{number}"
        answer = post(gateway, insert_id)
        if answer.status_code != 200:
            assert answer.status_code == 503, gateway.output()
            return acknowledged
        acknowledged.append(insert_id)
    raise AssertionError("the gateway never found the filesystem full")


def test_gateway_stays_unready_while_the_disk_stays_full(tmp_path: Path) -> None:
    """/readyz stays 503 as long as the disk is full (the retries fail), and the retry delay
    the gateway suggests grows; it turns 200 once space is freed."""
    with Receiver() as receiver, SmallDiskGateway(receiver, tmp_path / "spool") as gateway:
        receiver.mix({API_DOWN: 1.0}, seed=0)  # events stay in the spool
        fill_until_refused(gateway)
        full_since = time.monotonic()
        answers = []
        while time.monotonic() - full_since < 4.0:  # several write retries (after 1 s, 2 s)
            answers.append(httpx.get(f"{gateway.url}/readyz", timeout=10))
            time.sleep(0.1)
        statuses = {answer.status_code for answer in answers}
        assert statuses == {503}, f"readyz answered {statuses} while the disk was full"
        assert all("full" in answer.json()["reason"] for answer in answers)
        refusal = post(gateway, "while-full")
        assert refusal.status_code == 503
        retry_after = int(refusal.headers["Retry-After"])
        assert retry_after >= 2, "the retry delay did not grow"
        assert gateway.stats()["pipeline"]["spool"]["disk_full"] == 1
        (gateway.mounted / "filler").unlink()
        wait_until(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200,
            "readyz to answer 200 once space is back",
        )
        output = gateway.output()
        assert output.count("spool: the filesystem of") == 1, output  # said once, not per flip
        assert output.count("space is back") == 1, output
    print(f"readyz polls while full: {len(answers)}, all 503; Retry-After then: {retry_after}")


# -- events that waited for their conversation id ------------------------------------------------


def trace_spans(*spans: Span) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])]
    )
    return bytes(request.SerializeToString())


def text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def post_spans(gateway: Gateway, *spans: Span) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/traces",
        content=trace_spans(*spans),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )


def test_gateway_delivers_linked_waiting_events_at_shutdown_while_full(tmp_path: Path) -> None:
    """An event waits for its trace's root (it carries the conversation id); the disk fills;
    the root arrives. The batch with the root is taken (none of its own events was missed),
    and at SIGTERM the waiting event goes out with its conversation id, though its final body
    could not be written to the spool."""
    trace_id, root_id = uuid.uuid4().bytes, os.urandom(8)
    waiting = Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        parent_span_id=root_id,
        name="billing.upgrade",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_100_000_000,
        attributes=[
            text("greenflash.event.type", "upgrade_purchased"),
            text("greenflash.event.value", "149.00"),
            text("greenflash.event.value_type", "currency"),
            text("greenflash.event.insert_id", "waited"),
            text("greenflash.event.properties.padding", "p" * 20000),  # new pages when linked
        ],
    )
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="chat.turn",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_200_000_000,
        attributes=[text("gen_ai.conversation.id", "waiting-chat")],
    )
    with Receiver() as receiver, SmallDiskGateway(receiver, tmp_path / "spool") as gateway:
        assert post_spans(gateway, waiting).status_code == 200  # durable as a waiting row
        assert gateway.stats()["pipeline"]["waiting"] == 1
        assert fill(gateway.mounted / "filler") > 0
        answer = post_spans(gateway, root)  # links it; its final body cannot be written
        assert answer.status_code == 200, answer.text
        wait_until(lambda: gateway.stats()["pipeline"]["waiting"] == 0, "the event linked")
        assert gateway.stats()["pipeline"]["spool"]["disk_full"] == 1
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(WAIT_SECONDS) == 0, gateway.output()
    delivered = {event["insertId"]: event for event in receiver.accepted}
    assert "waited" in delivered, gateway.output()
    assert delivered["waited"].get("externalConversationId") == "waiting-chat", delivered


WAITING_APP = (
    APP_PRELUDE
    + """
with tracer.start_as_current_span("chat.turn") as root:
    with tracer.start_as_current_span("purchase") as span:
        span.set_attributes({{"greenflash.event.type": "upgrade_purchased",
                             "greenflash.event.value": "149.00",
                             "greenflash.event.value_type": "currency",
                             "greenflash.event.insert_id": "waited",
                             "greenflash.event.properties.padding": "p" * 20000}})
    wait(lambda: (processor.stats()["spool"] or {{}}).get("pending"))  # the waiting row
    fill(os.path.join(spool_dir, "filler"))
    root.set_attribute("gen_ai.conversation.id", "waiting-chat")
flushed = processor.force_flush(30000)
report = {{"flushed": flushed, "spool": processor.stats()["spool"]}}
provider.shutdown()
print(json.dumps(report), flush=True)
"""
)


def test_library_flush_delivers_linked_waiting_events_while_full(tmp_path: Path) -> None:
    """The root ends (with the conversation id) after the disk filled: force_flush sends the
    linked body from memory and says True only once it is delivered."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(WAITING_APP.format(root=str(ROOT), spool_dir=str(spool_dir))))
    with Receiver() as receiver:
        env = clean_env(
            GREENFLASH_API_KEY=receiver.api_key,
            GREENFLASH_BASE_URL=receiver.base_url,
            GREENFLASH_PRODUCT_ID=PRODUCT_ID,
            GREENFLASH_SPOOL_DIR=str(spool_dir),
        )
        done = subprocess.run(
            in_small_filesystem(spool_dir, [sys.executable, str(script)]),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        delivered = {event["insertId"]: event for event in receiver.accepted}
    print(report, list(delivered))
    assert report["spool"]["disk_full"] == 1, done.stderr  # still full at the flush
    assert report["flushed"] is True, done.stderr
    assert "waited" in delivered, done.stderr
    assert delivered["waited"].get("externalConversationId") == "waiting-chat"
