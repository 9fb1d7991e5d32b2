"""``python -m deploy {preflight,deploy,destroy,outputs,user}``: what the Makefile's targets run.

``deploy`` checks credentials and bootstrap first, runs ``cdk deploy`` with the outputs file,
and prints the outputs with ``ClientUrl`` on the last line. The CDK CLI is run from ``cdk/``
(the project's pinned version) with the Region this module resolved, so both agree on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy.outputs import OUTPUTS_FILE, ROOT, OutputsError, load_outputs, shown, summary
from deploy.preflight import (
    PreflightError,
    Target,
    bootstrap_qualifier,
    check_bootstrap,
    check_credentials,
    resolve_region,
    session_from_environment,
)
from deploy.users import ENDPOINTS_FILE, UserError, create_user, deployed_pool, local_pool

CDK_DIR = ROOT / "cdk"
Runner = Callable[[Sequence[str], Path, Mapping[str, str]], int]


def run_command(args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> int:
    return subprocess.call(list(args), cwd=cwd, env=dict(env))


class Deployer:
    """The deploy, destroy and preflight steps, with AWS and the CDK CLI injected for tests."""

    def __init__(
        self,
        session: Any | None = None,
        environ: Mapping[str, str] = os.environ,
        run: Runner = run_command,
        outputs_file: Path = OUTPUTS_FILE,
        out: Any | None = None,
    ) -> None:
        self._session = session
        self.environ = environ
        self.run = run
        self.outputs_file = outputs_file
        self.out = out if out is not None else sys.stdout

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = session_from_environment()
        return self._session

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def preflight(self, *, bootstrap: bool = True, region: str | None = None) -> Target:
        region = region or resolve_region(self.session, self.environ)
        target = check_credentials(self.session, region)
        self.say(f"AWS account {target.account}, Region {target.region} (as {target.arn})")
        if bootstrap:
            version = check_bootstrap(self.session, target, bootstrap_qualifier())
            if version is None:
                self.say(
                    "  bootstrap: not readable with these credentials (no ssm:GetParameter or "
                    "cloudformation:DescribeStacks); cdk deploy will check it"
                )
            else:
                self.say(f"  bootstrap: version {version}")
        return target

    def cdk(self, target: Target, *args: str) -> int:
        env = {**self.environ, "AWS_REGION": target.region, "AWS_DEFAULT_REGION": target.region}
        return self.run(["npx", "cdk", *args], CDK_DIR, env)

    def deploy(self, cdk_args: Sequence[str] = (), approval: str = "broadening") -> int:
        target = self.preflight()
        self.outputs_file.parent.mkdir(parents=True, exist_ok=True)
        code = self.cdk(
            target,
            "deploy",
            "--all",
            "--require-approval",
            approval,
            "--outputs-file",
            str(self.outputs_file),
            *cdk_args,
        )
        if code != 0:
            self.say(f"cdk deploy failed (exit {code}); nothing was written to the outputs file")
            return code
        outputs = load_outputs(self.outputs_file)
        self.say(f"Stack outputs (also in {shown(self.outputs_file)}):")
        for line in summary(outputs):
            self.say(line)
        return 0

    def destroy(self, force: bool = False, cdk_args: Sequence[str] = ()) -> int:
        # The Region the stack was deployed to, when this checkout deployed it.
        try:
            region: str | None = load_outputs(self.outputs_file).get("Region")
        except OutputsError:
            region = None
        if region:
            self.say(f"The stack is in {region} ({shown(self.outputs_file)})")
        target = self.preflight(bootstrap=False, region=region)
        code = self.cdk(target, "destroy", "--all", *(["--force"] if force else []), *cdk_args)
        if code == 0 and self.outputs_file.exists():
            self.outputs_file.unlink()
        return code


def _user(args: argparse.Namespace, out: Any) -> int:
    pool = local_pool(args.endpoints_file) if args.local else deployed_pool(args.outputs_file)
    password = create_user(pool.client(), pool, args.username or "", email=args.email)
    print(
        f"Created user {args.username!r} in pool {pool.user_pool_id} ({pool.source}), "
        "confirmed, with a permanent password.",
        file=out,
    )
    where = _sign_in_url(args)
    if where:
        print(f"Sign in at {where}", file=out)
    if args.local:
        print("The local pool lives as long as this run of make run.", file=out)
    print(f"Password (shown once, stored nowhere): {password}", file=out, flush=True)
    return 0


def _sign_in_url(args: argparse.Namespace) -> str | None:
    try:
        if args.local:
            return json.loads(Path(args.endpoints_file).read_text()).get("client")
        return load_outputs(args.outputs_file).get("ClientUrl")
    except (OSError, ValueError, OutputsError):
        return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("preflight", help="check credentials, Region and CDK bootstrap")
    d = sub.add_parser("deploy", help="preflight, cdk deploy, print the outputs (ClientUrl last)")
    d.add_argument(
        "--require-approval",
        choices=("broadening", "any-change", "never"),
        default="broadening",
        help="when cdk deploy asks first (never: no terminal, e.g. CI)",
    )
    d.add_argument("cdk_args", nargs=argparse.REMAINDER, help="passed to cdk deploy, e.g. -c ...")
    x = sub.add_parser("destroy", help="cdk destroy the stack, remove the outputs file")
    x.add_argument("--force", action="store_true", help="do not ask for confirmation")
    x.add_argument("cdk_args", nargs=argparse.REMAINDER, help="passed to cdk destroy")
    sub.add_parser("outputs", help="print the deployed stack's outputs (ClientUrl last)")
    u = sub.add_parser("user", help="create and confirm a user, print its password once")
    u.add_argument("--username", help="the user's name (sign in with it)")
    u.add_argument("--email", help="optional e-mail address, stored as verified")
    u.add_argument("--local", action="store_true", help="the local cloud's pool (make run)")
    u.add_argument("--outputs-file", type=Path, default=OUTPUTS_FILE)
    u.add_argument("--endpoints-file", type=Path, default=ENDPOINTS_FILE)
    return p


def main(argv: Sequence[str] | None = None, deployer: Deployer | None = None) -> int:
    args = parser().parse_args(argv)
    deployer = deployer or Deployer()
    out = deployer.out
    try:
        if args.command == "preflight":
            deployer.preflight()
            return 0
        if args.command == "deploy":
            return deployer.deploy(_without_separator(args.cdk_args), args.require_approval)
        if args.command == "destroy":
            return deployer.destroy(args.force, _without_separator(args.cdk_args))
        if args.command == "outputs":
            for line in summary(load_outputs(deployer.outputs_file)):
                print(line, file=out)
            return 0
        return _user(args, out)
    except (PreflightError, OutputsError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _without_separator(args: Sequence[str]) -> list[str]:
    return list(args[1:] if args[:1] == ["--"] else args)


if __name__ == "__main__":
    sys.exit(main())
