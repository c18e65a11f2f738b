from __future__ import annotations

import re
from pathlib import Path

import rubix_integration
from rubix_integration import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_complete_and_resolvable() -> None:
    names = rubix_integration.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(rubix_integration, name) is not None, name
    import types

    public = {
        n for n, v in vars(rubix_integration).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
        and n != "TYPE_CHECKING"
    }
    assert public <= set(names), public - set(names)


def test_import_leaves_the_contract_suites_and_pytest_alone() -> None:
    """``rubix_integration.testing`` serves plugin authors' test runs only; the package never
    imports it, so pytest stays a test dependency."""
    import subprocess
    import sys

    code = ("import sys, rubix_integration, rubix_integration.cli; "
            "print(sorted(m for m in ('pytest', 'rubix_integration.testing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    assert "testing" not in rubix_integration.__all__


def test_every_hook_is_documented_in_contributing() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## Hook reference", 1)[1]
    documented = set(re.findall(r"^### `(\w+)`", section, flags=re.M))
    specs = {n for n in dir(hookspecs)
             if callable(getattr(hookspecs, n)) and hasattr(getattr(hookspecs, n),
                                                             "rubix_integration_spec")}
    assert specs, "no hook specs found"
    assert specs == documented


def test_errors_module_draws_every_error_class() -> None:
    from rubix_integration import errors

    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, name


def _type_checking_imports(path: Path) -> dict[str, str]:
    """The names imported under ``if TYPE_CHECKING:`` in ``path``, and their modules."""
    import ast

    tree = ast.parse(path.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.unparse(stmt)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = stmt.module
    return found


def test_one_list_of_public_names_drives_all_and_the_type_checking_imports() -> None:
    public = rubix_integration._PUBLIC
    assert rubix_integration.__all__ == sorted([*public, "__version__"])
    package = Path(rubix_integration.__file__)
    assert _type_checking_imports(package) == public
    import importlib

    for name, module in public.items():
        assert getattr(rubix_integration, name) is getattr(importlib.import_module(module), name)
    assert set(dir(rubix_integration)) >= set(rubix_integration.__all__)


def test_tokens_package_names_match_its_type_checking_imports() -> None:
    from rubix_integration import tokens

    package = Path(tokens.__file__)
    assert _type_checking_imports(package) == tokens._PUBLIC
    assert tokens.__all__ == sorted(tokens._PUBLIC)
    for name in tokens.__all__:
        assert getattr(tokens, name) is not None, name


HEAVY = ("sqlalchemy", "sqlmodel", "duckdb", "ipfshttpclient", "psycopg", "rich",
         "cryptography", "multiformats")


def _heavy_modules_after(*argv: str) -> list[str]:
    """The heavy libraries a fresh interpreter has imported after running the CLI on ``argv``."""
    import subprocess
    import sys

    code = ("import sys\nfrom rubix_integration.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "Usage:" in out.stdout, out.stderr
    return [line for line in out.stdout.splitlines() if line.startswith("[")]


def test_help_imports_no_heavy_library() -> None:
    assert _heavy_modules_after("--help") == ["[]"]
    assert _heavy_modules_after("status", "--help") == ["[]"]
    assert _heavy_modules_after("sync", "--help") == ["[]"]


def test_no_capability_package_imports_the_manager() -> None:
    """Capabilities get what they need handed to them; only the command line and the datasets
    facade (the datasets API, built on a Manager) sit above the Manager."""
    import ast

    package = ROOT / "rubix_integration"
    manager_names = {f"rubix_integration.{n}" for n in ("_manager", "Manager", "connect")}
    offenders = []
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").exists()):
        if sub.name in ("cli", "datasets"):
            continue
        for path in sorted(sub.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [f"{node.module}.{a.name}" for a in node.names]
                if any(n.startswith("rubix_integration._manager") or n in manager_names
                       for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_stores_package_names_match_its_type_checking_imports() -> None:
    from rubix_integration import stores

    assert _type_checking_imports(Path(stores.__file__)) == stores._PUBLIC
    assert stores.__all__ == sorted(stores._PUBLIC)
    for name in stores.__all__:
        assert getattr(stores, name) is not None, name


def test_a_store_module_does_not_import_analytics() -> None:
    import subprocess
    import sys

    code = ("import sys\nimport rubix_integration.stores.sqlite\n"
            "print(sorted(m for m in ('duckdb', 'rubix_integration.stores.analytics') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
