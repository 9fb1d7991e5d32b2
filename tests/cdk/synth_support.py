"""The synthesized stack as the CDK tests read it (tests/cdk/conftest.py builds it once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_DIR = REPO_ROOT / "cdk"
FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
# The Region of the unit-test synth (a deploy needs a concrete one; see cdk/app.py).
SYNTH_REGION = "us-east-1"


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

    def stream_function(self) -> tuple[str, dict[str, Any]]:
        """The Node.js Function URL streamer: the only plain AWS::Lambda::Function with the
        project's handler (the others are CDK's custom-resource providers)."""
        (found,) = [
            (k, v)
            for k, v in self.of_type("AWS::Lambda::Function").items()
            if v["Properties"].get("Handler") == "index.handler"
            and "Custom" not in k
            and "AWS679f53fac002430cb0da5b7982bd2287" not in k
        ]
        return found
