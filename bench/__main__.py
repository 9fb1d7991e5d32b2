"""``make bench`` / ``python -m bench``: every architecture on the local cloud, against the
per-token baseline, with a concurrency sweep and a cost table.

Writes ``bench/results/latest.md`` (printed at the end), ``latest.json`` and ``lag.png``.

    python -m bench [--tokens 1000] [--rate 100] [--first-token-ms 300]
                    [--post-latency-ms 25] [--publish-latency-ms 40] [--flush-ms 50]
                    [--levels 1,10,50,100] [--repeats 3]
                    [--architectures function_url,websocket,appsync] [--no-baseline]
                    [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import report, runner
from bench.scenario import ARCHITECTURES, Scenario

RESULTS = Path(__file__).resolve().parent / "results"


def _ints(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        message = f"expected comma-separated integers, got {raw!r}"
        raise argparse.ArgumentTypeError(message) from None


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in raw.split(",") if x.strip())
    unknown = set(names) - set(ARCHITECTURES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"architectures must be some of {', '.join(ARCHITECTURES)}, got {raw!r}"
        )
    return names


def parse(argv: list[str]) -> tuple[Scenario, Path]:
    d = Scenario()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=d.tokens, help="model tokens per stream")
    p.add_argument("--rate", type=float, default=d.tokens_per_second, help="tokens per second")
    p.add_argument("--first-token-ms", type=float, default=d.first_token_ms)
    p.add_argument("--post-latency-ms", type=float, default=d.post_latency_ms)
    p.add_argument("--publish-latency-ms", type=float, default=d.publish_latency_ms)
    p.add_argument("--flush-ms", type=int, default=d.flush_interval_ms)
    p.add_argument("--levels", type=_ints, default=d.levels, help="concurrent streams, e.g. 1,10")
    p.add_argument("--repeats", type=int, default=d.repeats, help="one-stream runs")
    p.add_argument("--architectures", type=_names, default=d.architectures)
    p.add_argument("--no-baseline", action="store_true", help="skip the per-token baseline")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    a = p.parse_args(argv)
    scenario = Scenario(
        tokens=a.tokens,
        tokens_per_second=a.rate,
        first_token_ms=a.first_token_ms,
        post_latency_ms=a.post_latency_ms,
        publish_latency_ms=a.publish_latency_ms,
        flush_interval_ms=a.flush_ms,
        levels=a.levels,
        repeats=a.repeats,
        architectures=a.architectures,
        baseline=not a.no_baseline,
    )
    try:
        scenario.validate()
    except ValueError as exc:
        p.error(str(exc))
    return scenario, a.out


def write(results: dict[str, Any], out: Path) -> str:
    """Write latest.md, latest.json and lag.png to ``out``; returns the markdown."""
    summary = report.summaries(results)
    text = report.markdown(results, summary, report.machine())
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(text + "\n")
    (out / "latest.json").write_text(report.to_json(results, summary))
    report.plot(results, out / "lag.png")
    return text


def main(argv: list[str] | None = None) -> int:
    scenario, out = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    results = asyncio.run(runner.run(scenario, progress))
    text = write(results, out)
    print()
    print(text)
    print(f"Written to {out}/latest.md, latest.json and lag.png.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
