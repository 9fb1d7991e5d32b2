"""The hosted comparison client: the built ``client/dist`` in a private S3 bucket behind a
CloudFront distribution, which also routes the client's REST paths to the REST API, so that
the page and its API share one origin (docs/architecture.md, hosting)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from stacks.nag import acknowledge, resource_finding
from stacks.props import API_STAGE
from stacks.roles import lambda_role

CLIENT_ENTRY_FILE = "index.html"
# The client's REST paths (client/src: ./config, the stream reads and cancel) and /health:
# served by the REST API under the same origin as the page, never cached.
API_PATH_PATTERNS = ("/config", "/health", "/streams", "/streams/*")
# Vite's build names every asset by its content hash: cache them for a year. index.html
# names the current assets, so it is revalidated on every load.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
INDEX_CACHE_CONTROL = "no-cache"

# Viewer requests of the default (S3) behaviour: a path without a file extension is a route
# of the single-page app, answered with index.html. Only on the default behaviour, so an API
# 404 or 403 stays what the API said.
SPA_FALLBACK_CODE = """\
function handler(event) {
  var request = event.request;
  var last = request.uri.split('/').pop();
  if (last.indexOf('.') === -1) {
    request.uri = '/index.html';
  }
  return request;
}
"""
# Viewer requests of the API behaviours: the REST API sees its own host (the origin request
# policy forwards every viewer header but Host), so it learns the page's host from this
# header and GET /config answers with URLs on the page's origin (app.py, _rest_url).
FORWARDED_HOST_HEADER = "x-forwarded-host"
FORWARDED_HOST_CODE = f"""\
function handler(event) {{
  var request = event.request;
  request.headers['{FORWARDED_HOST_HEADER}'] = {{ value: request.headers.host.value }};
  return request;
}}
"""


def check_client_dist(path: str | os.PathLike[str], *, require_build: bool = True) -> Path:
    """The built client, checked so that synth fails rather than deploying an empty site."""
    directory = Path(path).resolve()
    if require_build and not (directory / CLIENT_ENTRY_FILE).is_file():
        raise FileNotFoundError(
            f"{directory / CLIENT_ENTRY_FILE} not found: build the client first "
            "(`make client`, or `cd client && npm ci && npm run build`); the stack deploys "
            "client/dist as it is and builds nothing itself"
        )
    return directory


def host_of(url: str) -> str:
    """The host of a URL attribute (``https://host/path`` -> ``host``), at deploy time."""
    return cdk.Fn.select(2, cdk.Fn.split("/", url))


def content_security_policy(connect_sources: Sequence[str]) -> str:
    """The page's CSP: its own scripts and styles only; network access to exactly the
    stack's endpoints."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src " + " ".join(["'self'", *connect_sources]),
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class ClientHosting(Construct):
    """The bucket (private, TLS only; CloudFront reads it through origin access control), the
    distribution (HTTPS only, security headers, the API behaviours, SPA fallback), and the
    deployment of the built client into the bucket.

    No cycle: the distribution names the REST API's host and the other endpoints (CSP), and
    nothing the REST API or its functions use names the distribution. The Function URL's CORS
    origin is set after both exist (StreamFunctionUrl.allow_origins), and GET /config learns
    the public REST URL from the viewer's host (FORWARDED_HOST_CODE).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        client_dist: Path,
        rest_api_domain: str,
        connect_sources: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # The deployment below deletes its files on stack delete (retain_on_delete off),
            # so the emptied bucket can go too.
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.headers_policy = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            comment="llm-stream client: CSP naming exactly this stack's endpoints",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(connect_sources),
                    override=True,
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=cdk.Duration.days(365),
                    include_subdomains=True,
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN,
                    override=True,
                ),
            ),
        )
        spa_fallback = cloudfront.Function(
            self,
            "SpaFallback",
            comment="llm-stream client: paths without an extension serve index.html",
            code=cloudfront.FunctionCode.from_inline(SPA_FALLBACK_CODE),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
        )
        forwarded_host = cloudfront.Function(
            self,
            "ForwardedHost",
            comment="llm-stream API paths: tell the REST API the page's host",
            code=cloudfront.FunctionCode.from_inline(FORWARDED_HOST_CODE),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
        )
        rest_origin = origins.HttpOrigin(
            rest_api_domain,
            origin_path=f"/{API_STAGE}",
            protocol_policy=cloudfront.OriginProtocolPolicy.HTTPS_ONLY,
            origin_ssl_protocols=[cloudfront.OriginSslPolicy.TLS_V1_2],
        )
        api_behavior = cloudfront.BehaviorOptions(
            origin=rest_origin,
            viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
            allowed_methods=cloudfront.AllowedMethods.ALLOW_ALL,
            cache_policy=cloudfront.CachePolicy.CACHING_DISABLED,
            # Authorization and the query string (?afterSeq=) reach the API; Host does not
            # (API Gateway routes by its own host name).
            origin_request_policy=cloudfront.OriginRequestPolicy.ALL_VIEWER_EXCEPT_HOST_HEADER,
            response_headers_policy=self.headers_policy,
            function_associations=[
                cloudfront.FunctionAssociation(
                    function=forwarded_host, event_type=cloudfront.FunctionEventType.VIEWER_REQUEST
                )
            ],
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="llm-stream comparison client and its REST API",
            default_root_object=CLIENT_ENTRY_FILE,
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers_policy,
                function_associations=[
                    cloudfront.FunctionAssociation(
                        function=spa_fallback,
                        event_type=cloudfront.FunctionEventType.VIEWER_REQUEST,
                    )
                ],
            ),
            additional_behaviors=dict.fromkeys(API_PATH_PATTERNS, api_behavior),
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
        )
        self.domain_name = self.distribution.distribution_domain_name
        # The page's origin: the CORS origin of the Function URL, and ClientUrl.
        self.origin = f"https://{self.domain_name}"
        self._deploy(client_dist)
        self._acknowledgements()

    def _deploy(self, client_dist: Path) -> None:
        """Upload the build: the hashed assets first, then index.html, which names them (so
        a page never names an asset that is not there yet). No invalidation is needed (and
        none granted): assets have new names, index.html is revalidated."""
        self.deployment_role = role = lambda_role(
            self,
            "DeploymentRole",
            "llm-stream client upload: write the client bucket, read the CDK asset",
        )
        log_group = logs.LogGroup(
            self,
            "DeploymentLogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        log_group.grant_write(role)
        source = s3deploy.Source.asset(str(client_dist))
        common = {
            "destination_bucket": self.bucket,
            "role": role,
            "log_group": log_group,
            "retain_on_delete": False,
            "prune": True,
        }
        assets = s3deploy.BucketDeployment(
            self,
            "DeployAssets",
            sources=[source],
            exclude=[CLIENT_ENTRY_FILE],
            cache_control=[s3deploy.CacheControl.from_string(ASSET_CACHE_CONTROL)],
            **common,  # type: ignore[arg-type]
        )
        index = s3deploy.BucketDeployment(
            self,
            "DeployIndex",
            sources=[source],
            exclude=["*"],
            include=[CLIENT_ENTRY_FILE],
            cache_control=[s3deploy.CacheControl.from_string(INDEX_CACHE_CONTROL)],
            **common,  # type: ignore[arg-type]
        )
        index.node.add_dependency(assets)
        self.deployments = (assets, index)

    def _acknowledgements(self) -> None:
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "No server access logs on the client bucket: it is private and only CloudFront "
            "reads it (origin access control); it holds the public build of the client and "
            "nothing else, and a log bucket would need its own retention and logging.",
        )
        distribution = self.distribution
        acknowledge(
            distribution,
            "AwsSolutions-CFR1",
            "No geo restriction: the demo is meant to be reachable wherever its deployer is; "
            "every API call needs a Cognito token of an administrator-created user.",
        )
        acknowledge(
            distribution,
            "AwsSolutions-CFR2",
            "No WAF web ACL: a web ACL is billed per month and per rule; the distribution "
            "serves static files and forwards to a REST API that throttles per stage and "
            "method and authorizes every stream request.",
        )
        acknowledge(
            distribution,
            "AwsSolutions-CFR3",
            "No CloudFront standard logs: they need an ACL-enabled log bucket (or, for "
            "CloudWatch delivery, resources in us-east-1 only); every API request is logged "
            "by the REST stage's access log, and the static files are public anyway.",
        )
        acknowledge(
            distribution,
            "AwsSolutions-CFR4",
            "The distribution uses CloudFront's default *.cloudfront.net certificate, with "
            "which CloudFront does not allow choosing the minimum viewer TLS version; a "
            "custom domain with an ACM certificate (TLSv1.2_2021) is the deployer's option.",
        )
        role = self.deployment_role
        stack = cdk.Stack.of(self)
        bucket_objects = resource_finding(self, f"{self.bucket.bucket_arn}/*")
        qualifier = (
            stack.synthesizer.bootstrap_qualifier or cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER
        )
        # The bootstrap's asset bucket (DefaultStackSynthesizer's name for it).
        asset_objects = (
            f"Resource::arn:<AWS::Partition>:s3:::cdk-{qualifier}-assets-<AWS::AccountId>-"
            f"{stack.region}/*"
        )
        for finding, why in (
            ("Action::s3:GetObject*", "read the client asset and the bucket's objects"),
            ("Action::s3:GetBucket*", "read the bucket's location and settings"),
            ("Action::s3:List*", "list the objects it syncs (prune)"),
            ("Action::s3:DeleteObject*", "remove files the new build no longer has (prune)"),
            ("Action::s3:Abort*", "abort a failed multipart upload"),
            (bucket_objects, "write any file of the build into this one bucket"),
            (asset_objects, "read the zipped build that cdk deploy uploaded"),
        ):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[{finding}]",
                "CDK's BucketDeployment grants its upload function s3 actions by prefix on the "
                f"client bucket and the CDK asset it copies from ({why}); the role is this "
                "construct's own and used by nothing else.",
            )
