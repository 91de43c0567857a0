"""The dependency rules of ARCHITECTURE.md, read from the import statements of every module (lazy
imports inside functions included): the runtime never imports the converter, training or the TUI;
the TUI never imports the CLI; no module imports another bayling_local module's private names."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = {
    "bayling_local": "bayling_local",
    "convert": "bayling_local.convert",
    "training": "bayling_local.training",
    "tui": "bayling_local.tui",
}
"""Source folder -> import name ([tool.setuptools.package-dir] maps the top-level parts into the package)."""
FRONT_ENDS = ("bayling_local.cli", "bayling_local.__main__", "bayling_local.tui")
"""They sit on top: the CLI may import convert/training/tui, the TUI may import convert."""
OPTIONAL_PARTS = ("bayling_local.convert", "bayling_local.training", "bayling_local.tui")


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module."""
    target: str
    """The imported module (for `from M import n`: M)."""
    name: str | None
    """For `from M import n`: n."""
    line: int

    def __str__(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{self.module}:{self.line}: {what}"


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPOSITORY).with_suffix("").parts
    parts = [PACKAGE_FOLDERS[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: str, source: str) -> list[Import]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            found += [Import(module, target, alias.name, node.lineno) for alias in node.names]
    return found


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join([*base, node.module] if node.module else base)


def all_imports() -> list[Import]:
    found = []
    for folder in PACKAGE_FOLDERS:
        for path in sorted((REPOSITORY / folder).rglob("*.py")):
            found += imports_of(module_name(path), path.read_text("utf-8"))
    return found


def within(module: str, parts: tuple[str, ...]) -> bool:
    return any(module == part or module.startswith(part + ".") for part in parts)


def runtime_imports_of_optional_parts(imports: list[Import]) -> list[str]:
    return [str(i) for i in imports if not within(i.module, FRONT_ENDS + OPTIONAL_PARTS)
            and within(i.target, OPTIONAL_PARTS)]


def tui_imports_of_the_cli(imports: list[Import]) -> list[str]:
    return [str(i) for i in imports if within(i.module, ("bayling_local.tui",)) and within(i.target, ("bayling_local.cli",))]


def private_name_imports(imports: list[Import]) -> list[str]:
    """`from bayling_local.X import _name` in a module other than X (dunders such as __version__ are public)."""
    return [str(i) for i in imports if within(i.target, ("bayling_local",)) and i.name and i.name.startswith("_")
            and not i.name.endswith("__") and i.target != i.module]


def test_the_runtime_never_imports_convert_training_or_the_tui():
    assert runtime_imports_of_optional_parts(all_imports()) == []


def test_the_tui_never_imports_the_cli():
    assert tui_imports_of_the_cli(all_imports()) == []


def test_no_module_imports_a_private_name_of_another():
    assert private_name_imports(all_imports()) == []


def test_the_rules_catch_a_lazy_import_a_relative_import_and_a_private_name():
    # The scan itself must see what it is meant to forbid, or the tests above prove nothing.
    runtime = imports_of("bayling_local.model", "def f():\n    from bayling_local.convert import to_gguf\n")
    tui = imports_of("bayling_local.tui.screens.models", "from ...cli.output import human_size\n")
    private = imports_of("bayling_local.backends.onnxrt", "from bayling_local.backends.hf import _chat_template\n")
    assert runtime_imports_of_optional_parts(runtime) == ["bayling_local.model:2: from bayling_local.convert import to_gguf"]
    assert tui_imports_of_the_cli(tui) == ["bayling_local.tui.screens.models:1: from bayling_local.cli.output import human_size"]
    assert len(private_name_imports(private)) == 1
    assert runtime_imports_of_optional_parts(imports_of("bayling_local.cli.convert", "import bayling_local.convert\n")) == []
