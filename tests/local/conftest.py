"""Fixtures shared by the end-to-end modules; each module defines its own ``cloud``
(a ``tests.support.cloud.Cloud`` started with the settings it needs)."""

from __future__ import annotations

import pytest

from local.bedrock import EmulatorControl


@pytest.fixture(scope="module")
def token(cloud) -> str:
    """An ID token of the local user."""
    return cloud.user_token()


@pytest.fixture(scope="module")
def model(cloud) -> EmulatorControl:
    return EmulatorControl(cloud.ep["bedrock"])


@pytest.fixture
def reset_model(model):
    """Faults and timing set by a test do not leak into the next one."""
    model.reset()
    yield
    model.reset()
