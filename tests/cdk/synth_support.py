"""The synthesized stack as the CDK tests read it (tests/cdk/conftest.py builds it once)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_DIR = REPO_ROOT / "cdk"
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
# The Region of the unit-test synth (a deploy needs a concrete one; see cdk/app.py).
SYNTH_REGION = "us-east-1"
# Logical id prefixes of aws-cdk-lib's singleton provider functions (BucketDeployment,
# AwsCustomResource).
CDK_PROVIDER_PREFIXES = ("CustomCDKBucketDeployment", "AWS679f53fac002430cb0da5b7982bd2287")


@dataclass(frozen=True)
class Synth:
    stack: Any
    template: dict[str, Any]
    resources: dict[str, dict[str, Any]]
    outputs: dict[str, Any]
    nag_report: Any
    acknowledgements: dict[str, str]
    deployment_zips: list[Path]
    app_module_before: ModuleType | None
    app_module_after: ModuleType | None
    leaked_env: dict[str, str]
    assembly_dir: Path
    client_dist: Path

    def of_type(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    def functions(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] in FUNCTION_TYPES}

    def cdk_provider_functions(self) -> set[str]:
        """aws-cdk-lib's own custom-resource functions (client upload, CORS update)."""
        return {
            k for k in self.of_type("AWS::Lambda::Function") if k.startswith(CDK_PROVIDER_PREFIXES)
        }

    def project_functions(self) -> dict[str, dict[str, Any]]:
        """The functions of this project: Chalice's and the Node.js streamer."""
        providers = self.cdk_provider_functions()
        return {k: v for k, v in self.functions().items() if k not in providers}

    def stream_function(self) -> tuple[str, dict[str, Any]]:
        """The Node.js Function URL streamer: the only plain AWS::Lambda::Function with the
        project's handler (the others are CDK's custom-resource providers)."""
        providers = self.cdk_provider_functions()
        (found,) = [
            (k, v) for k, v in self.of_type("AWS::Lambda::Function").items() if k not in providers
        ]
        return found


def flat(value: Any) -> str:
    """A template expression as one string, for comparisons: ``Ref`` as ``<Id>``,
    ``Fn::GetAtt`` as ``<Id.Attr>``, ``Fn::Join`` concatenated, a URL's host as
    ``host(...)``, ``Fn::Sub`` with its variables as ``<name>``; anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(flat(p) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if isinstance(value, dict) and "Fn::Select" in value:
        # The host of a URL attribute: part 2 of it split on "/".
        index, source = value["Fn::Select"]
        separator, text = source["Fn::Split"]
        assert (index, separator) == (2, "/"), value
        return f"host({flat(text)})"
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return re.sub(r"\$\{([^}]+)\}", r"<\1>", value["Fn::Sub"])
    return json.dumps(value, sort_keys=True)
