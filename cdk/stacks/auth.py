"""Cognito: the user pool (admin-created users) and the app client every transport accepts."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from stacks.nag import acknowledge

# Short-lived tokens: Cognito ID and access tokens stay valid until they expire, even after
# sign-out or revocation (docs/security.md), and an open WebSocket is refused new streams
# once its token has expired. The client refreshes them with the refresh token.
ID_TOKEN_VALIDITY = cdk.Duration.minutes(15)
ACCESS_TOKEN_VALIDITY = cdk.Duration.minutes(15)
REFRESH_TOKEN_VALIDITY = cdk.Duration.days(30)


class Auth(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, threat_protection: bool) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,  # users are created by an administrator
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            sign_in_case_sensitive=False,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=cdk.Duration.days(3),
            ),
            # Users may enrol a TOTP app; see the AwsSolutions-COG2 acknowledgement for why
            # not REQUIRED. SMS is off: it would need an SNS role and a spend limit.
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            # Essentials has a free tier; Plus (threat protection) is billed per monthly
            # active user from the first one, so it is opt-in.
            feature_plan=(
                cognito.FeaturePlan.PLUS if threat_protection else cognito.FeaturePlan.ESSENTIALS
            ),
            standard_threat_protection_mode=(
                cognito.StandardThreatProtectionMode.FULL_FUNCTION if threat_protection else None
            ),
            # A demo stack: `cdk destroy` removes the pool and its users with it.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.user_pool_client = pool.add_client(
            "WebClient",
            generate_secret=False,  # browser and CLI clients cannot keep a secret
            auth_flows=cognito.AuthFlow(user_password=True, user_srp=True),  # + refresh, always
            id_token_validity=ID_TOKEN_VALIDITY,
            access_token_validity=ACCESS_TOKEN_VALIDITY,
            refresh_token_validity=REFRESH_TOKEN_VALIDITY,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            disable_o_auth=True,  # no hosted UI: clients sign in through the Cognito API
        )
        acknowledge(
            pool,
            "AwsSolutions-COG2",
            "MFA is OPTIONAL (TOTP), not REQUIRED: accounts are created by an administrator "
            "only, and the headless clients of this project (bench/, terminal clients and "
            "end-to-end tests) sign in non-interactively with USER_PASSWORD_AUTH, which a "
            "mandatory TOTP challenge would block.",
        )
        if not threat_protection:
            acknowledge(
                pool,
                "AwsSolutions-COG8",
                "Essentials by default: the Plus feature plan (threat protection) is billed "
                "per monthly active user with no free tier; self sign-up is off and users are "
                "admin-created. Deployers opt in with -c threatProtection=true.",
            )

    def environment(self) -> dict[str, str]:
        return {
            "USER_POOL_ID": self.user_pool.user_pool_id,
            "USER_POOL_CLIENT_ID": self.user_pool_client.user_pool_client_id,
        }
