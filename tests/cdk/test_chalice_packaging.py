"""The tripwire on Chalice's packaging internals that cdk/stacks/chalice_packaging.py patches:
it fails the day a Chalice upgrade changes any of them, so the patch is reviewed (and the
fingerprints updated) rather than silently building a package for the wrong Python."""

from __future__ import annotations

import hashlib
import inspect
from types import ModuleType

import pytest

pytestmark = pytest.mark.cdk

# sha256 of each member's source in chalice 1.34.0, the version the patch was written for.
REVIEWED_SOURCES = {
    ("Config", "lambda_python_version"): (
        "f13d1d5a123d89350ad99c3a428029aac2997f57517f67bf43c133cb45f14246"
    ),
    ("PipRunner", "_execute"): "0297ef61e6fe770808582b42832cfcca71a11eb56de670f31b41391f3d308880",
    ("PipRunner", "download_manylinux_wheels"): (
        "219237703020a2bdd62d153fe5000049330bf616302ff3ef8ba409026944319d"
    ),
    ("DependencyBuilder", "build_site_packages"): (
        "32117ab3e2ec75c91d74e078c3abf898290dc99b5a375d6b0c3ccd29bfa69a85"
    ),
    ("MissingDependencyError", "__init__"): (
        "472619d4f8caa3d530061f48b03b6042123e47e2cd5229339ec0fa3f9e933eec"
    ),
}


def _source_of(owner: type, name: str) -> str:
    member = inspect.getattr_static(owner, name)
    function = member.fget if isinstance(member, property) else member
    return inspect.getsource(function)


def test_the_patched_chalice_internals_are_the_reviewed_ones(stacks: ModuleType) -> None:
    patched = stacks.chalice_packaging.PATCHED_INTERNALS
    assert {(owner.__name__, name) for owner, name in patched} == set(REVIEWED_SOURCES)
    changed = [
        f"{owner.__name__}.{name}"
        for owner, name in patched
        if hashlib.sha256(_source_of(owner, name).encode()).hexdigest()
        != REVIEWED_SOURCES[(owner.__name__, name)]
    ]
    assert changed == [], (
        "Chalice changed what cdk/stacks/chalice_packaging.py patches: review the patch "
        "against the new code (and whether Chalice now packages for a chosen Python version "
        "itself), then update REVIEWED_SOURCES"
    )


def test_the_patch_relies_on_the_arguments_chalice_passes(stacks: ModuleType) -> None:
    """The wheel download names --abi and no --python-version, which the patch adds."""
    from chalice.deploy.packager import PipRunner

    source = _source_of(PipRunner, "download_manylinux_wheels")
    assert "'--abi'" in source or '"--abi"' in source
    assert "--python-version" not in source
    signature = inspect.signature(PipRunner._execute)
    assert list(signature.parameters)[:3] == ["self", "command", "args"]


def test_the_patch_is_undone_after_packaging(stacks: ModuleType, tmp_path) -> None:
    from chalice.config import Config
    from chalice.deploy.packager import DependencyBuilder, PipRunner

    before = [inspect.getattr_static(o, n) for o, n in stacks.chalice_packaging.PATCHED_INTERNALS]
    with stacks.chalice_packaging.chalice_packaging(str(tmp_path), "python3.12"):
        assert Config().lambda_python_version == "python3.12"
        assert PipRunner._execute is not before[1]
        assert DependencyBuilder.build_site_packages is not before[3]
    after = [inspect.getattr_static(o, n) for o, n in stacks.chalice_packaging.PATCHED_INTERNALS]
    assert after == before
