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
