"""Lambda execution roles: empty, so that each construct grants exactly what its functions use."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct


def lambda_role(scope: Construct, construct_id: str, description: str) -> iam.Role:
    return iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
