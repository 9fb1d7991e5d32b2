"""CDK entry point: ``cd cdk && npx cdk synth`` (or ``../.venv/bin/python app.py``).

Context (``-c name=value``): modelId, allowedOrigin, logLevel, threatProtection,
streamReservedConcurrency (an integer, or "none" for no reservation).

node_function/ must hold index.mjs and its installed dependencies (`npm ci --omit=dev`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before importing aws_cdk/chalice: the Chalice construct imports the project's app.py, whose
# boto3/botocore setup needs a Region, and the CDK CLI sets only CDK_DEFAULT_REGION.
os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("CDK_DEFAULT_REGION", "us-east-1"))

# The stack shares its table schemas with the runtime (chalicelib), which lives one level up.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402
from stacks.llm_stream_stack import LlmStreamStack  # noqa: E402


def main() -> None:
    # The CLI passes its output dir in CDK_OUTDIR; `python app.py` alone writes to cdk.out too.
    app = cdk.App(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"))
    LlmStreamStack(
        app,
        "LlmStream",
        # Environment-agnostic unless the CLI resolved an account/Region (offline synth works).
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
        description="llm-stream: stream Amazon Bedrock tokens through serverless transports",
    )
    # cdk-nag 3 is a CDK policy-validation plugin: findings not acknowledged fail the synth.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
