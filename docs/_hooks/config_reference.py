"""MkDocs hook: the configuration reference's table, built from the code's own table.

``docs/configuration.md`` holds the marker ``<!-- environment-variables -->``; at build time it
is replaced by one row per entry of ``otel_greenflash._config.ENVIRONMENT_VARIABLES``: the
variable, the keyword argument of ``GreenflashSpanProcessor`` / ``configure()`` that sets the
same thing, and what it does. Which setting reads which variable comes from the resolver's own
code in the same module (its ``_get(setting, variable, ...)`` calls, and the branches that read
``aliases`` / ``extra_aliases``), so no column is kept by hand; the build fails when a setting
found there is not a keyword argument of the processor.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

MARKER = "<!-- environment-variables -->"

ARGUMENT_FOR_SETTING = {"max_export_batch_size": "max_batch_size"}
"""Settings whose keyword argument has another name (the processor keeps OpenTelemetry's)."""


def _string(node: ast.expr, module: object) -> str | None:
    """A literal string, or the string value of a module-level name such as ``ENV_API_KEY``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(module, node.id, None)
        return value if isinstance(value, str) else None
    return None


def _calls(tree: ast.AST, method: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
        and node.args
    ]


def settings_by_variable() -> dict[str, str]:
    """``{"GREENFLASH_TIMEOUT": "timeout_seconds", ...}``, read from the resolver's code."""
    from otel_greenflash import _config

    tree = ast.parse(inspect.getsource(_config))
    found: dict[str, str] = {}
    for call in _calls(tree, "_get"):  # self._get(setting, variable, default, parse, check)
        if len(call.args) >= 2:
            setting, variable = _string(call.args[0], _config), _string(call.args[1], _config)
            if setting is not None and variable is not None:
                found[variable] = setting
    for branch in ast.walk(tree):  # if explicit.get(setting) ...: else: env.get(variable)
        if isinstance(branch, ast.If):
            settings = [_string(call.args[0], _config) for call in _calls(branch.test, "get")]
            variables = [
                _string(call.args[0], _config)
                for node in branch.orelse
                for call in _calls(node, "get")
            ]
            if len(settings) == 1 and len(variables) == 1 and settings[0] and variables[0]:
                found.setdefault(variables[0], settings[0])
    return found


def environment_table() -> str:
    """The Markdown table of every environment variable the library reads, in the code's order."""
    from otel_greenflash import GreenflashSpanProcessor
    from otel_greenflash._config import ENVIRONMENT_VARIABLES

    keywords = inspect.signature(GreenflashSpanProcessor.__init__).parameters
    settings = settings_by_variable()
    rows = ["| environment variable | keyword argument | what it does |", "|---|---|---|"]
    for variable, meaning in ENVIRONMENT_VARIABLES.items():
        argument = "—"
        if variable in settings:
            argument = ARGUMENT_FOR_SETTING.get(settings[variable], settings[variable])
            if argument not in keywords:
                raise ValueError(f"{variable}: {argument!r} is no GreenflashSpanProcessor keyword")
            argument = f"`{argument}`"
        cell = " ".join(meaning.split()).replace("|", "\\|")
        rows.append(f"| `{variable}` | {argument} | {cell} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the generated table, on any page that holds it."""
    return markdown.replace(MARKER, environment_table()) if MARKER in markdown else markdown
