"""One offline synth of the stack for every CDK test module (it takes most of their time).

No AWS account, credentials or network beyond PyPI (Chalice pip-installs requirements.txt into
``.chalice/deployments/`` once; later runs reuse it).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.cdk.synth_support import CDK_DIR, SYNTH_REGION, Synth

# Tests that import app.py read its settings from the environment: the two every deployed
# function gets from the stack (the synth itself sets and restores its own).
os.environ.setdefault("USER_POOL_ID", "us-east-1_CdkTestPool")
os.environ.setdefault("USER_POOL_CLIENT_ID", "cdk-test-client")


@pytest.fixture(scope="session")
def stack_module() -> Iterator[ModuleType]:
    """``cdk/stacks/llm_stream_stack.py``, imported without leaving ``cdk/`` on sys.path
    (``cdk/app.py`` would otherwise shadow the Chalice ``app`` module for other tests)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(CDK_DIR))
        module = importlib.import_module("stacks.llm_stream_stack")
    yield module


@pytest.fixture(scope="session")
def stacks(stack_module: ModuleType) -> ModuleType:
    """The ``stacks`` package, its construct modules loaded (``stacks.props``, ...)."""
    return sys.modules["stacks"]


def fake_client_dist(directory: Path) -> Path:
    """A stand-in for the built client (``client/dist``), so this suite does not depend on the
    client having been built; the stack checks only that index.html exists."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text("<!doctype html><title>llm-stream</title>\n")
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / "index-0000.js").write_text("export {};\n")
    return directory


def synthesize(stack_module: ModuleType, workdir: Path, **stack_kwargs: object) -> Synth:
    """Synthesize the stack as ``cdk synth`` would (cdk-nag included) in ``workdir``."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    client_dist = fake_client_dist(workdir / "client-dist")
    app_module_before = sys.modules.get("app")
    env_before = dict(os.environ)
    with pytest.MonkeyPatch.context() as mp:
        # The Chalice construct imports app.py, whose botocore setup needs a Region.
        mp.setenv("AWS_DEFAULT_REGION", SYNTH_REGION)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe for credentials
        mp.chdir(workdir)  # the construct writes chalice.out/ into the working directory
        env_during = dict(os.environ)
        app = cdk.App(outdir=str(workdir / "cdk.out"))
        # The real node_function/ (index.mjs required); whether `npm ci` ran there is not
        # this suite's concern (make synth / cdk synth check it: require_node_modules).
        stack = stack_module.LlmStreamStack(
            app,
            "LlmStream",
            env=cdk.Environment(region=SYNTH_REGION),
            require_node_modules=False,
            client_dist_dir=client_dist,
            **stack_kwargs,
        )
        nag = AwsSolutionsChecks(app, verbose=True)
        cdk.Validations.of(app).add_plugins(nag)  # as cdk/app.py does
        template = Template.from_stack(stack).to_json()
        report = nag.validate_scope(app)
        leaked = {k: v for k, v in os.environ.items() if env_during.get(k) != v}
        zips = sorted((workdir / "chalice.out").glob("*/deployment.zip"))
    assert dict(os.environ) == env_before

    acknowledgements: dict[str, str] = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY and entry.data:
                for rule, reason in dict(entry.data).items():
                    acknowledgements[re.sub(r"^annotation::", "", rule, flags=re.I)] = reason
    return Synth(
        stack=stack,
        template=template,
        resources=template["Resources"],
        outputs=template.get("Outputs", {}),
        nag_report=report,
        acknowledgements=acknowledgements,
        deployment_zips=zips,
        app_module_before=app_module_before,
        app_module_after=sys.modules.get("app"),
        leaked_env=leaked,
        assembly_dir=workdir / "cdk.out",
        client_dist=client_dist,
    )


@pytest.fixture(scope="session")
def synth(stack_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(stack_module, tmp_path_factory.mktemp("cdk-synth"))
