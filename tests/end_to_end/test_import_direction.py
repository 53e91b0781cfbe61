"""The package's imports go one way (docs/architecture.md): public modules and the front door
→ ``_pipeline/`` → the stage folders → the shared modules beneath; between stages only the
sideways imports the architecture page names."""

from __future__ import annotations

import ast
from pathlib import Path

import otel_greenflash

PACKAGE = Path(otel_greenflash.__file__).parent
STAGES = {"_link", "_map", "_lane", "_deliver", "_lifecycle"}
SHARED = {
    "attributes",
    "_callbacks",
    "_config",
    "_event",
    "_exceptions",
    "_green",
    "_intake_kind",
    "_logging",
    "_network",
    "_record_only",
    "_records",
    "_stats",
    "_version",
}
SIDEWAYS = {
    ("_map", "_link"),
    ("_lane", "_deliver"),
    ("_lifecycle", "_lane"),
    ("_lifecycle", "_deliver"),
}


def _layer(unit: str) -> int:
    """0: shared; 1: a stage; 2: the pipeline; 3: public modules and the front door."""
    if unit in SHARED:
        return 0
    if unit in STAGES:
        return 1
    if unit == "_pipeline":
        return 2
    return 3


def _unit(module: str) -> str:
    """The top-level module or folder of ``otel_greenflash.<unit>...``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """The package modules ``path`` imports (anywhere in it), with their lines."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(relative[:-1])
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "otel_greenflash" or (node.module is None and name.count(".") == 0):
                found.extend((f"{name}.{alias.name}", node.lineno) for alias in node.names)
            elif name.startswith("otel_greenflash."):
                found.append((name, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend(
                (alias.name, node.lineno)
                for alias in node.names
                if alias.name.startswith("otel_greenflash.")
            )
    return found


def test_no_module_imports_upward_or_sideways_beyond_the_named_ones() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        source = _unit(module)
        for imported, line in _imports(path):
            target = _unit(imported)
            if target == source or _layer(source) == 3:
                continue
            upward = _layer(target) > _layer(source)
            sideways = _layer(target) == _layer(source) == 1 and (source, target) not in SIDEWAYS
            if upward or sideways:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported}")
    assert wrong == []
