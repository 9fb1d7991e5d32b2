"""The benchmark's scenario: what the model does, what each call costs, what is run."""

from __future__ import annotations

from dataclasses import dataclass, field

ARCHITECTURES = ("function_url", "websocket", "appsync", "rest_stream")
LABELS = {
    "function_url": "Function URL (SSE)",
    "websocket": "WebSocket (API Gateway)",
    "appsync": "AppSync + SQS",
    "rest_stream": "REST API streaming (SSE)",
}
MODES = ("coalesce", "per_token")
MODE_LABELS = {
    "coalesce": "coalescing (default)",
    "per_token": "per-token baseline",
    "deployed": "as deployed",
}


@dataclass(frozen=True)
class Scenario:
    # The simulated model.
    tokens: int = 1000
    tokens_per_second: float = 100.0
    first_token_ms: float = 300.0
    # Injected per-call latencies: one @connections post, one AppSync publish. The
    # Function URL writes to its own HTTP response (nothing to inject); SQS delivery is
    # what the local event source gives.
    post_latency_ms: float = 25.0
    publish_latency_ms: float = 40.0
    # The app's coalescing interval (FLUSH_INTERVAL_MS).
    flush_interval_ms: int = 50
    # Concurrent streams per architecture; level 1 is the default scenario, run
    # ``repeats`` times one stream after another.
    levels: tuple[int, ...] = (1, 10, 50, 100)
    repeats: int = 3
    architectures: tuple[str, ...] = ARCHITECTURES
    # The per-token baseline, one stream per architecture, in its own local cloud.
    baseline: bool = True
    # Targets (README): each is checked and reported beside its measured figure.
    completion_target_ms: float = 150.0
    lag_margin_ms: float = 30.0
    calls_per_1k_target: float = 100.0
    concurrency_lag_factor: float = 2.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def latency_ms(self, architecture: str) -> float:
        """The injected latency of one publish call of ``architecture``."""
        return {
            "function_url": 0.0,
            "rest_stream": 0.0,  # the same function writing to its own response
            "websocket": self.post_latency_ms,
            "appsync": self.publish_latency_ms,
        }[architecture]

    def app_env(self, mode: str) -> dict[str, str]:
        return {
            "SENDER_MODE": mode,
            "FLUSH_INTERVAL_MS": str(self.flush_interval_ms),
            **self.extra_env,
        }

    def describe(self) -> str:
        return (
            f"simulated model: {self.first_token_ms:g} ms to first token, "
            f"{self.tokens_per_second:g} tokens/s, {self.tokens} tokens per stream; "
            f"injected latency {self.post_latency_ms:g} ms per `@connections` post, "
            f"{self.publish_latency_ms:g} ms per AppSync publish; "
            f"`FLUSH_INTERVAL_MS={self.flush_interval_ms}`"
        )

    def validate(self) -> None:
        if self.tokens < 2 or self.tokens > 100_000:
            raise ValueError(f"tokens must be between 2 and 100000, got {self.tokens}")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens per second must be positive")
        if not self.levels or min(self.levels) < 1 or max(self.levels) > 200:
            raise ValueError(f"levels must be between 1 and 200 streams, got {self.levels}")
        if 1 not in self.levels:
            raise ValueError("levels must include 1 (the default scenario)")
        if self.repeats < 1:
            raise ValueError("repeats must be at least 1")
        unknown = set(self.architectures) - set(ARCHITECTURES)
        if unknown:
            raise ValueError(
                f"unknown architectures {sorted(unknown)}; expected some of {ARCHITECTURES}"
            )
