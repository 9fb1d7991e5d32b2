"""Apply the SAM transform to a synthesized template, as CloudFormation does at deploy time.

Usage: ``python sam_transform.py IN.json OUT.json REGION`` with aws-sam-translator installed
(the validators' own environment, requirements-validators.txt). cfn-lint and checkov then
check the AWS::Lambda / AWS::ApiGateway resources that will really be created, rather than
the AWS::Serverless shorthand that the Chalice template is written in.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# Stand-ins for the pseudo parameters the transform reads; the template keeps its own Refs.
ACCOUNT_ID = "123456789012"


class _NoManagedPolicies:
    """The stack attaches no AWS managed policy by name, so the transform needs none."""

    def load(self) -> dict[str, str]:
        return {}


def transform(template: dict[str, Any], region: str) -> dict[str, Any]:
    os.environ.setdefault("AWS_DEFAULT_REGION", region)  # the translator's boto3 session
    from samtranslator.translator.transform import transform as sam_transform

    parameters = {"AWS::Region": region, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws"}
    return sam_transform(template, parameters, _NoManagedPolicies())


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, target, region = Path(argv[1]), Path(argv[2]), argv[3]
    result = transform(json.loads(source.read_text()), region)
    target.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
