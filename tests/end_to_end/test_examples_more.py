"""The zero-code and web-app examples, run as users would, plus the documentation's
completeness: the configuration reference and the stage map."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from otel_greenflash._config import ENVIRONMENT_VARIABLES
from otel_greenflash.testing import EventsApiServer
from tests.support.common import PRODUCT_ID
from tests.support.processes import clean_env, command, run

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_documents_every_environment_variable() -> None:
    """The reference page's table is generated at build time (docs/_hooks): the page holds
    the marker, and the generated table has a row, with a meaning, for every variable."""
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "docs" / "_hooks" / "config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert hook.MARKER in page
    built = hook.on_page_markdown(page)
    rows = {row.split("|")[1].strip(): row for row in built.splitlines() if row.startswith("| `")}
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in rows]
    assert missing == []
    assert all(row.rstrip(" |").split("|")[-1].strip() for row in rows.values())


def test_the_stage_map_names_every_module_and_only_modules_that_exist() -> None:
    """docs/architecture.md names every module of the package (``spool*.py`` stands for the
    spool's modules), and it and the README's map name no module that does not exist."""
    package = ROOT / "otel_greenflash"
    every_module = {path.name for path in package.rglob("*.py")}
    modules = {
        path.name
        for path in package.rglob("*.py")
        if "testing" not in path.relative_to(package).parts
        and path.name not in {"__init__.py", "__main__.py", "_version.py"}
    }
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    readme = (ROOT / "README.md").read_text()
    stage_map = readme[readme.index("## How it is built") :]
    stage_map = stage_map[: stage_map.index("\n## ")]
    named = set(re.findall(r"[\w*]+\.py\b", architecture + stage_map))
    assert [name for name in named if not fnmatch.filter(every_module, name)] == []
    unnamed = [m for m in modules if not any(fnmatch.fnmatch(m, name) for name in named)]
    assert unnamed == []
    for folder in {path.parent.name for path in package.rglob("*.py")} - {"otel_greenflash"}:
        assert f"{folder}/" in architecture


def test_zero_code_example(server: EventsApiServer) -> None:
    pytest.importorskip("opentelemetry.distro")
    env = clean_env(
        GREENFLASH_BASE_URL=server.base_url,
        GREENFLASH_API_KEY=server.api_key,
        GREENFLASH_PRODUCT_ID=PRODUCT_ID,
        GREENFLASH_INSTALL_PROCESSOR="true",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    example = str(ROOT / "examples" / "zero_code_app.py")
    result = run([command("opentelemetry-instrument"), sys.executable, example], env)
    assert result.returncode == 0, result.stderr
    [event] = server.events
    assert event["externalConversationId"] == "thread-7"
    assert event["value"] == "149.00"


def test_web_app_example_reports_an_upgrade_per_request() -> None:
    probe = EventsApiServer()
    port = probe.port
    probe.stop()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "web_app.py"), str(port)],
        env=clean_env(GREENFLASH_BSP_SCHEDULE_DELAY="50"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}/chat"
        response = httpx.post(url, params={"conversation": "c-42", "text": "upgrade"}, timeout=10)
        assert response.json() == {"reply": "Upgraded!"}
        httpx.post(url, params={"conversation": "c-43", "text": "hello"}, timeout=10)
        deadline = time.monotonic() + 20
        line = ""
        while "event received" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
        assert '"externalConversationId": "c-42"' in line
        assert '"eventType": "upgrade_purchased"' in line
    finally:
        process.terminate()
        process.wait(timeout=10)
