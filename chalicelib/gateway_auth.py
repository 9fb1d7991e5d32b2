"""What API Gateway expects of a Lambda authorizer, shared by REST and WebSocket."""

from __future__ import annotations

from typing import Any


class Unauthorized(Exception):
    """API Gateway answers 401 only when a Lambda authorizer fails with exactly the
    message "Unauthorized"; any other failure becomes a 500."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def policy(principal_id: str, effect: str, resource: str, context: dict[str, str]) -> dict:
    """A REQUEST authorizer's answer. ``context`` reaches the integration as
    ``requestContext.authorizer`` (values must be strings, numbers or booleans)."""
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": context,
    }


def claims_context(claims: dict[str, Any]) -> dict[str, str | int]:
    """What later requests of the caller see of the token: who, and until when (``exp``:
    a WebSocket connection outlives its token, so each message can tell it expired)."""
    return {
        "sub": str(claims["sub"]),
        "username": str(claims.get("cognito:username", "")),
        "exp": int(claims["exp"]),
    }
