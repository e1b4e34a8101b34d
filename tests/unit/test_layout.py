"""The package reads top-down: front ends -> flow -> plan (pure core) / effects -> adapters, with
no module over 400 lines and no class over 200. Read from the source, without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailhook"
MODULE_LINES = 400
CLASS_LINES = 200
# Modules allowed over the limits while they are being split; drop an entry as soon as it fits.
OVERSIZE_FOR_NOW: set[str] = set()

# Each module's layer; a module imports only from its own layer or the ones below it.
LAYERS = [
    ("core", ("mailhook.core", "mailhook.errors")),
    ("base", ("mailhook.config", "mailhook.config_errors", "mailhook.config_sections",
              "mailhook.config_files", "mailhook.logfmt", "mailhook.faults", "mailhook.compat",
              "mailhook.loop")),
    ("adapters", ("mailhook.store", "mailhook.trueconf", "mailhook.relay", "mailhook.locks",
                  "mailhook.metrics", "mailhook.health", "mailhook.status", "mailhook.notify",
                  "mailhook.testing", "mailhook.caldav_writeback", "mailhook.tls")),
    ("effects", ("mailhook.conferences", "mailhook.background", "mailhook.postponed_check")),
    ("handling", ("mailhook.handling",)),
    ("flow", ("mailhook.flow",)),
    ("frontends", ("mailhook.frontends",)),
    ("app", ("mailhook.app",)),
    ("service and tools", ("mailhook.daemon", "mailhook.workers", "mailhook.admin",
                           "mailhook.explain", "mailhook.reschedule", "mailhook.reconcile",
                           "mailhook.install", "mailhook.storetools", "mailhook.milter_check")),
    ("cli", ("mailhook.cli", "mailhook.commands", "mailhook.__main__")),
]
PACKAGE_LAYER = 1  # mailhook/__init__.py: the version, nothing else
# Front ends speak their protocol and call the flow; they reach nothing that acts on its own.
FRONTEND_MAY_USE = ("mailhook.frontends", "mailhook.flow", "mailhook.core", "mailhook.compat",
                    "mailhook.config", "mailhook.logfmt", "mailhook.errors")
# Tools build their parts through app.py and use the store through its interface.
TOOLS = ("mailhook.admin", "mailhook.explain", "mailhook.reschedule", "mailhook.reconcile")
TOOLS_NEVER_USE = ("sqlite3", "sqlite_utils", "mailhook.store.sqlite", "mailhook.trueconf.client",
                   "mailhook.frontends", "mailhook.flow", "mailhook.handling", "mailhook.daemon")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module the source imports, at any level (function-level imports included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def layer(module: str) -> int:
    if module == "mailhook":
        return PACKAGE_LAYER
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} has no layer in tests/unit/test_layout.py")


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


MODULES = modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports_nothing_above_it(name):
    """A module imports only from its own layer or the layers below (core at the bottom,
    the command line at the top), so the import graph reads top-down."""
    mine = layer(name)
    above = sorted(m for m in imports(name, MODULES[name])
                   if m.startswith("mailhook.") and m in MODULES and layer(m) > mine)
    assert not above, f"{name} ({LAYERS[mine][0]}) imports from above: {above}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if within(m, ("mailhook.frontends",))))
def test_front_end_reaches_only_the_flow(name):
    """A front end uses the flow, the pure core and its protocol's library, never the store,
    TrueConf, the next hop or the effects directly."""
    used = {m for m in imports(name, MODULES[name]) if m.startswith("mailhook")}
    assert {m for m in used if not within(m, FRONTEND_MAY_USE)} == set()


@pytest.mark.parametrize("name", TOOLS)
def test_tools_build_through_app_and_use_the_store_interface(name):
    """Admin commands, explain and reschedule get their parts from app.py and read the store
    through its interface: no raw SQL, no adapter built by hand."""
    used = imports(name, MODULES[name])
    assert {m for m in used if within(m, TOOLS_NEVER_USE)} == set()


def test_the_core_imports_only_the_core():
    """Nothing in mailhook/core imports a mailhook module outside the core (the error
    hierarchy, which does no I/O, aside)."""
    for name, path in MODULES.items():
        if within(name, ("mailhook.core",)):
            outside = {m for m in imports(name, path) if m.startswith("mailhook")
                       and not within(m, ("mailhook.core", "mailhook.errors"))}
            assert outside == set(), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_classes_are_small(name):
    """No module is over 400 lines and no class over 200."""
    if name in OVERSIZE_FOR_NOW:
        pytest.skip("being split")
    text = MODULES[name].read_text()
    assert len(text.splitlines()) <= MODULE_LINES, f"{name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= CLASS_LINES, f"{name}.{node.name}: {size} lines"
