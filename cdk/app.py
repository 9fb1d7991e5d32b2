"""CDK entry point: ``cd cdk && npx cdk synth`` (or ``../.venv/bin/python app.py``).

Context (``-c name=value``, see stacks/props.py): modelId, extraAllowedOrigins, logLevel,
threatProtection, streamReservedConcurrency, apiGatewayLogsRole.

The Region must be concrete (CDK_DEFAULT_REGION, set by the CLI from the profile, or
AWS_DEFAULT_REGION): the default model's inference profile and its permissions follow it.
node_function/ must hold index.mjs and its installed dependencies (`npm ci --omit=dev`), and
client/dist the built client (`make client`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The deployment Region: the CLI's (from the profile), else the environment's.
REGION = os.environ.get("CDK_DEFAULT_REGION") or os.environ.get("AWS_DEFAULT_REGION")
if not REGION:
    sys.exit(
        "No AWS Region: set AWS_DEFAULT_REGION (or a region in the AWS profile the CDK CLI "
        "uses); the default model's inference profile depends on it"
    )
# Before importing aws_cdk/chalice: the Chalice construct imports the project's app.py, whose
# boto3/botocore setup needs a Region, and the CDK CLI sets only CDK_DEFAULT_REGION.
os.environ["AWS_DEFAULT_REGION"] = REGION

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
        # The account only if the CLI resolved one (offline synth works); the Region always.
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=REGION,
        ),
        description="llm-stream: stream Amazon Bedrock tokens through serverless transports",
    )
    # cdk-nag 3 is a CDK policy-validation plugin: findings not acknowledged fail the synth.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
