"""The settings of the suite's one local cloud, and what its cases derive from them."""

from __future__ import annotations

# The producers poll the cancel flag twice per flush interval; at 100 ms a cancel has
# room to land within one interval on a loaded 2-core machine (see test_function_url_e2e).
FLUSH_INTERVAL_MS = 100
# A stalled model ends the stream with MODEL_TIMEOUT after this much silence.
MODEL_IDLE_TIMEOUT_S = 2.0
CLAIM_LEASE_S = 5.0
SUITE_ENV = {
    "FLUSH_INTERVAL_MS": str(FLUSH_INTERVAL_MS),
    "MODEL_IDLE_TIMEOUT_S": str(MODEL_IDLE_TIMEOUT_S),
    # Throttling retries back off at most 50, 100, 200 ms instead of 250 ms .. 4 s.
    "MODEL_RETRY_BASE_MS": "50",
    "MODEL_RETRY_MAX_MS": "200",
    # A producer that died is known as such once its lease lapses (renewed every third).
    "CLAIM_LEASE_S": str(CLAIM_LEASE_S),
}
# The simulated model's pace for the suite: quick to the first token, 100 tokens/s.
MODEL_TIMING = {"firstTokenDelayMs": 50, "tokensPerSecond": 100}
