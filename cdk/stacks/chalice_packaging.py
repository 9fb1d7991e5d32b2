"""The one place that patches Chalice's packaging internals (Chalice 1.34.0).

Chalice has no supported way to build a deployment package for a Python other than the one
running it: ``chalice package`` (and so the Chalice CDK construct) always targets the running
interpreter, and its dependency builder only warns when a wheel is missing. The stack deploys
python3.12 while synth may run elsewhere, so :func:`chalice_packaging` corrects both for the
duration of the construct's packaging. ``tests/cdk/test_chalice_packaging.py`` fails the day
Chalice changes any member patched here (:data:`PATCHED_INTERNALS`), so that an upgrade is
reviewed instead of silently building a wrong package.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock

from chalice.config import Config as ChaliceConfig
from chalice.deploy.packager import DependencyBuilder, MissingDependencyError, PipRunner

# Modules of the Chalice project that its packaging imports.
_APP_MODULES = ("app", "chalicelib")
# (owner, member): what chalice_packaging replaces or relies on (download_manylinux_wheels
# builds the pip arguments that _execute amends).
PATCHED_INTERNALS = (
    (ChaliceConfig, "lambda_python_version"),
    (PipRunner, "_execute"),
    (PipRunner, "download_manylinux_wheels"),
    (DependencyBuilder, "build_site_packages"),
    (MissingDependencyError, "__init__"),
)


def _is_app_module(name: str) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in _APP_MODULES)


@contextlib.contextmanager
def chalice_packaging(source_dir: str, runtime: str) -> Iterator[None]:
    """Run the Chalice construct's in-process ``chalice package`` correctly and without
    side effects. Chalice 1.34.0 needs three corrections, all undone on exit:

    * Target runtime. Chalice packages for the Python that runs synth (3.11 here). Overriding
      only the template's Runtime would ship cp311-only binaries (cffi's
      ``_cffi_backend.cpython-311-…so``, which cryptography imports) to a python3.12 Lambda,
      where ``import cryptography`` fails. So Chalice is told the target runtime, and its pip
      calls for manylinux wheels get the matching ``--python-version`` (Chalice passes only
      ``--abi``, and pip then still asks for the running interpreter's wheels).
    * Missing wheels. Chalice prints "Could not install dependencies" and builds a zip
      without them; here that fails the synth instead of deploying a broken function.
    * Process state. Packaging imports the project's ``app.py`` (cached in ``sys.modules``),
      writes the stage env vars (CDK token strings) into ``os.environ``, and prepends the
      project to ``sys.path`` only if absent. The project is put first (so ``import app``
      cannot find another ``app.py``, such as the CDK entry point), the app is imported
      fresh with this stack's settings (the CORS origin is read at import), and nothing
      leaks into a second stack or a test session.
    """
    python_version = runtime.removeprefix("python")
    original_execute = PipRunner._execute
    original_build = DependencyBuilder.build_site_packages

    def execute(self: PipRunner, command: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        if command == "download" and "--abi" in args and "--python-version" not in args:
            args = [*args, "--python-version", python_version]
        return original_execute(self, command, args, *rest, **kw)

    def build_site_packages(self: DependencyBuilder, abi: str, *args: Any) -> None:
        try:
            original_build(self, abi, *args)
        except MissingDependencyError as exc:
            names = ", ".join(sorted(p.identifier for p in exc.missing))
            raise RuntimeError(f"no {abi} manylinux wheel for: {names}") from None

    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    saved_modules = {n: m for n, m in sys.modules.items() if _is_app_module(n)}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(
                ChaliceConfig, "lambda_python_version", property(lambda _self: runtime)
            )
        )
        stack.enter_context(mock.patch.object(PipRunner, "_execute", execute))
        stack.enter_context(
            mock.patch.object(DependencyBuilder, "build_site_packages", build_site_packages)
        )
        # Chalice warns that the running Python differs from the Lambda one: intended here.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="You are currently running")
        for name in saved_modules:
            del sys.modules[name]
        others = [p for p in sys.path if os.path.abspath(p or ".") != source_dir]
        sys.path[:] = [source_dir, *others]
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            sys.path[:] = saved_path
            for name in [n for n in sys.modules if _is_app_module(n)]:
                del sys.modules[name]
            sys.modules.update(saved_modules)
