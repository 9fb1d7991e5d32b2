"""The fault and security suite (marker ``security``): one local cloud for the whole suite,
users with every token Cognito issues, the emulators' fault controls reset around each
case, and a summary line per group at the end of the run.

Cases are tagged ``@pytest.mark.security("<group>")``. Tagged tests elsewhere count too:
the CDK synth checks (tests/cdk) and end-to-end tests whose own module cloud has the
settings they need (tests/local), so nothing they already prove is repeated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.appsync import AppSyncControl
from local.bedrock import EmulatorControl
from local.ws_gateway import GatewayControl
from tests.security.checks import Store, Users
from tests.security.clients import AppSync, FunctionUrl, Rest, RestStream, User, WebSocket
from tests.security.cloud_settings import MODEL_TIMING, SUITE_ENV
from tests.support.cloud import Cloud

# Group -> what a passing case shows, for the summary line ("auth: 90/90 rejected").
GROUPS: dict[str, str] = {
    "auth": "rejected, nothing streamed or stored",
    "isolation": "refused or invisible, victim unharmed",
    "input": "named the problem, service kept working",
    "model": "ended with the right frame, store consistent",
    "transport": "no frame lost or duplicated",
    "cancel": "stopped within one flush interval, second cancel harmless",
    "logs": "free of tokens, passwords and prompts",
    "infra": "least privilege holds",
}

# -- the summary -----------------------------------------------------------------------


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("security")
    if marker is None:
        return None
    group = marker.args[0] if marker.args else None
    if group not in GROUPS:
        raise pytest.UsageError(f"{item.nodeid}: security group must be one of {list(GROUPS)}")
    return group


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Reports carry user_properties, so the summary knows each report's group.
    for item in items:
        group = _group(item)
        if group is not None:
            item.user_properties.append(("security_group", group))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    outcomes: dict[str, dict[str, str]] = {}  # group -> nodeid -> outcome
    notes: dict[str, list[str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", None) or [])
            group = props.get("security_group")
            if group is None or not hasattr(report, "when"):
                continue
            cases = outcomes.setdefault(group, {})
            if report.failed:
                cases[report.nodeid] = "failed"
            elif report.skipped:
                cases.setdefault(report.nodeid, "skipped")
            elif report.when == "call":
                cases.setdefault(report.nodeid, "passed")
                if "security_note" in props:
                    notes.setdefault(group, []).append(props["security_note"])
    if not outcomes:
        return
    terminalreporter.section("fault and security suite")
    for group, verb in GROUPS.items():
        cases = outcomes.get(group)
        if not cases:
            continue
        passed = sum(1 for o in cases.values() if o == "passed")
        terminalreporter.write_line(f"{group}: {passed}/{len(cases)} {verb}")
        for text in notes.get(group, []):
            terminalreporter.write_line(f"    {text}")


# -- the cloud and its fault controls ----------------------------------------------------


@pytest.fixture(scope="package")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    c = Cloud(tmp_path_factory.mktemp("security-cloud"), env=SUITE_ENV)
    yield c
    c.stop()


@pytest.fixture(scope="package")
def model(cloud: Cloud) -> EmulatorControl:
    return EmulatorControl(cloud.ep["bedrock"])


@pytest.fixture(scope="package")
def gateway(cloud: Cloud) -> GatewayControl:
    return GatewayControl(cloud.ep["websocket"].replace("ws://", "http://", 1))


@pytest.fixture(scope="package")
def appsync_control(cloud: Cloud) -> AppSyncControl:
    return AppSyncControl(cloud.ep["appsync"]["graphql"].removesuffix("graphql"))


@pytest.fixture(autouse=True)
def clean_faults(model, gateway, appsync_control) -> Iterator[None]:
    """No fault or timing set by one case leaks into the next."""

    def reset() -> None:
        model.reset()
        model.faults(**MODEL_TIMING)
        gateway.reset()
        appsync_control.reset()

    reset()
    yield
    reset()


# -- clients -------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def rest(cloud: Cloud) -> Rest:
    return Rest(cloud)


@pytest.fixture(scope="package")
def function_url(cloud: Cloud) -> FunctionUrl:
    return FunctionUrl(cloud)


@pytest.fixture(scope="package")
def websocket(cloud: Cloud) -> WebSocket:
    return WebSocket(cloud)


@pytest.fixture(scope="package")
def appsync(cloud: Cloud) -> AppSync:
    return AppSync(cloud)


@pytest.fixture(scope="package")
def rest_stream(cloud: Cloud) -> RestStream:
    return RestStream(cloud)


@pytest.fixture(scope="package")
def transports(function_url, websocket, appsync, rest_stream) -> dict[str, Any]:
    """The four streaming transports by name."""
    return {
        "function_url": function_url,
        "websocket": websocket,
        "appsync": appsync,
        "rest_stream": rest_stream,
    }


# -- users, the store ---------------------------------------------------------------------


@pytest.fixture(scope="package")
def users(cloud: Cloud) -> Users:
    return Users(cloud)


@pytest.fixture(scope="package")
def local_user(cloud: Cloud, users: Users) -> User:
    """The local cloud's own user (the one `make run` prints)."""
    return users.sign_in(cloud.ep["user"]["username"], cloud.ep["user"]["password"])


@pytest.fixture(scope="package")
def store(cloud: Cloud) -> Store:
    return Store(cloud)
