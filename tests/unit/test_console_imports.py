"""The console's boundaries, read from its source: it reaches the services through their gRPC
APIs only (the generated ``infusion.*`` stubs), never a service's own Python package; what it
shares with a service lives in services/common (the GS1 reading, the topic kinds)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "services" / "console"
SERVICES = ("services.scheduler", "services.inventory", "services.notify")


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Each import of ``path``, function-local ones too: its line, module and names."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _sources() -> list[Path]:
    found = sorted(CONSOLE.rglob("*.py"))
    assert found, CONSOLE
    return found


def test_the_console_imports_no_service_package() -> None:
    crossing = sorted(
        {
            f"{path.relative_to(CONSOLE)}:{line}: {module}"
            for path in _sources()
            for line, module, names in _imports(path)
            for imported in [module, *(f"{module}.{n}" for n in names)]
            if any(imported == s or imported.startswith(f"{s}.") for s in SERVICES)
        }
    )
    assert not crossing, "the console reaches a service through its gRPC API only:\n" + (
        "\n".join(crossing)
    )


def _console_module(module: str) -> bool:
    return module == "services.console" or module.startswith("services.console.")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_console_module_uses_another_ones_private_names() -> None:
    """A helper two modules need is given a public name where it belongs (choosing.py,
    context.py), not reached for behind another module's underscore."""
    reaching = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        console_imports = [
            node for node in imports if node.level or _console_module(node.module or "")
        ]
        for node in console_imports:
            reaching += [
                f"{path.name}:{node.lineno}: {node.module or '.'}.{alias.name}"
                for alias in node.names
                if _private(alias.name)
            ]
        # the console's modules bound to a name (from services.console import reads), whose
        # private attributes are as private as an imported name
        modules = {
            alias.asname or alias.name
            for node in console_imports
            if node.module == "services.console" or (node.level and not node.module)
            for alias in node.names
        }
        reaching += [
            f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ]
    assert not reaching, "another console module's private name:\n" + "\n".join(reaching)
