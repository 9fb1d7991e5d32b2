import pytest

from local.__main__ import gateway_limits_from_env
from local.ws_gateway import GatewayLimits


def test_gateway_limits_default_to_api_gateways_quotas():
    assert gateway_limits_from_env({}) == GatewayLimits()
    assert GatewayLimits().integration_timeout_s == 29.0


def test_gateway_limits_are_read_from_local_ws_variables():
    limits = gateway_limits_from_env(
        {"LOCAL_WS_INTEGRATION_TIMEOUT_S": "1.5", "LOCAL_WS_MESSAGE_BYTES": "1024"}
    )
    assert (limits.integration_timeout_s, limits.message_bytes) == (1.5, 1024)


def test_a_malformed_limit_names_the_variable():
    with pytest.raises(SystemExit, match="LOCAL_WS_IDLE_TIMEOUT_S must be a number"):
        gateway_limits_from_env({"LOCAL_WS_IDLE_TIMEOUT_S": "soon"})


def test_log_lines_show_the_fields_passed_with_extra():
    import logging

    from local.__main__ import WithFields

    record = logging.makeLogRecord(
        {"name": "x", "msg": "stream finished", "levelno": 20, "streamId": "s-1", "frames": 3}
    )
    line = WithFields("%(name)s %(message)s").format(record)
    assert line == 'x stream finished {"streamId": "s-1", "frames": 3}'
    plain = logging.makeLogRecord({"name": "x", "msg": "no fields"})
    assert WithFields("%(name)s %(message)s").format(plain) == "x no fields"
