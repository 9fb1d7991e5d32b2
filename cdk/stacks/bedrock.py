"""Permission to call exactly one Bedrock model (directly or through its inference profile)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.nag import acknowledge

# Prefixes of system-defined (cross-Region) inference profile ids, e.g. "us.anthropic.…".
_INFERENCE_PROFILE_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})
# ConverseStream is authorised as InvokeModelWithResponseStream, Converse as InvokeModel.
BEDROCK_ACTIONS = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")


def split_inference_profile(model_id: str) -> tuple[str | None, str]:
    """``("us", "anthropic.claude…")`` for a system-defined inference profile id,
    ``(None, model_id)`` for a plain foundation model id."""
    prefix, _, rest = model_id.partition(".")
    if prefix in _INFERENCE_PROFILE_PREFIXES and "." in rest:
        return prefix, rest
    return None, model_id


class BedrockModel:
    """The model every producer calls, and the statements that allow it and nothing more."""

    def __init__(self, scope: Construct, model_id: str) -> None:
        self.model_id = model_id
        self._stack = cdk.Stack.of(scope)

    def statements(self) -> list[iam.PolicyStatement]:
        stack = self._stack
        geo, base_model_id = split_inference_profile(self.model_id)
        if geo is None:
            model_arn = stack.format_arn(
                service="bedrock",
                account="",
                resource="foundation-model",
                resource_name=base_model_id,
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            )
            return [iam.PolicyStatement(actions=list(BEDROCK_ACTIONS), resources=[model_arn])]
        profile_arn = stack.format_arn(
            service="bedrock",
            resource="inference-profile",
            resource_name=self.model_id,
            arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
        )
        # A cross-Region profile runs the model in any of its destination Regions, which AWS
        # may extend: the Region is a wildcard, the model is not, and the condition admits
        # the model only when called through this profile.
        model_arns = [
            stack.format_arn(
                service="bedrock",
                region="*",
                account="",
                resource="foundation-model",
                resource_name=base_model_id,
                arn_format=cdk.ArnFormat.SLASH_RESOURCE_NAME,
            )
        ]
        if geo == "global":
            # Global profiles authorise the model with a Region-less ARN (AWS global CRIS docs).
            model_arns.append(f"arn:{cdk.Aws.PARTITION}:bedrock:::foundation-model/{base_model_id}")
        return [
            iam.PolicyStatement(actions=list(BEDROCK_ACTIONS), resources=[profile_arn]),
            iam.PolicyStatement(
                actions=list(BEDROCK_ACTIONS),
                resources=model_arns,
                conditions={"ArnLike": {"bedrock:InferenceProfileArn": profile_arn}},
            ),
        ]

    def grant(self, role: iam.Role) -> None:
        for statement in self.statements():
            role.add_to_policy(statement)
        geo, base_model_id = split_inference_profile(self.model_id)
        if geo is None:
            return
        finding = f"Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/{base_model_id}"
        acknowledge(
            role,
            f"AwsSolutions-IAM5[{finding}]",
            "The Region of the foundation-model ARN is a wildcard because the cross-Region "
            f"inference profile {self.model_id} runs the model in any of its destination "
            "Regions, a set AWS may extend. The model itself is fixed, and a "
            "bedrock:InferenceProfileArn condition admits it only through that one inference "
            "profile.",
        )
