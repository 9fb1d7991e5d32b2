"""cdk-nag acknowledgements: each names one finding and says why it stands."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def nag_text(value: Any) -> str:
    """A resolved value as cdk-nag names it in a finding id: ``Ref`` as ``<Id>`` (pseudo
    parameters too), ``Fn::GetAtt`` as ``<Id.Attr>``, ``Fn::Join`` concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(nag_text(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    raise ValueError(f"cannot name {value!r} as cdk-nag does")


def resource_finding(scope: IConstruct, arn: str) -> str:
    """The ``Resource::…`` part of an IAM5 finding id for an ARN built in ``scope``'s stack
    (resolved, so it matches with and without a concrete Region)."""
    return f"Resource::{nag_text(cdk.Stack.of(scope).resolve(arn))}"
