"""``make bench`` / ``python -m bench``: every architecture on the local cloud, against the
per-token baseline, with a concurrency sweep and a cost table.

Writes ``bench/results/latest.md`` (printed at the end), ``latest.json`` and ``lag.png``.

    python -m bench [--tokens 1000] [--rate 100] [--first-token-ms 300]
                    [--post-latency-ms 25] [--publish-latency-ms 40] [--flush-ms 50]
                    [--levels 1,10,50,100] [--repeats 3]
                    [--architectures function_url,websocket,appsync,rest_stream] [--no-baseline]
                    [--out bench/results]

``--target deployed`` (``make bench-deployed``) runs the same clients against a deployed
stack instead (``bench/deployed.py``), writing ``deployed.md``, ``deployed.json`` and
``deployed-lag.png``:

    python -m bench --target deployed [--outputs .local/stack-outputs.json] [--stack NAME]
                    [--create-users] [--tokens 400] [--levels 1,10] [--repeats 3]
                    [--architectures ...] [--out bench/results]

It signs in as ``BENCH_USERNAME`` / ``BENCH_PASSWORD``, or with ``--create-users`` creates
(and afterwards deletes) bench users with Cognito admin calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import deployed, report, runner
from bench.deployed import DEFAULT_OUTPUTS
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


# The deployed target asks a real model for every token: smaller defaults.
DEPLOYED_DEFAULTS = {"tokens": 400, "levels": (1, 10), "repeats": 3}
# Settings of the local cloud's simulated model and injected latencies.
LOCAL_ONLY = ("rate", "first_token_ms", "post_latency_ms", "publish_latency_ms", "flush_ms")


@dataclass(frozen=True)
class Options:
    scenario: Scenario
    out: Path
    target: str = "local"
    outputs: Path = DEFAULT_OUTPUTS
    stack: str | None = None
    create_users: bool = False


def parse(argv: list[str]) -> Options:
    d = Scenario()
    p = argparse.ArgumentParser(
        prog="python -m bench", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    p.add_argument(
        "--target",
        choices=("local", "deployed"),
        default="local",
        help="the local cloud (default) or a deployed stack (its outputs file)",
    )
    dd = DEPLOYED_DEFAULTS
    p.add_argument(
        "--tokens",
        type=int,
        help=f"model tokens per stream ({d.tokens}; deployed: maxTokens, {dd['tokens']})",
    )
    p.add_argument(
        "--rate", type=float, help=f"simulated model: tokens per second ({d.tokens_per_second:g})"
    )
    p.add_argument(
        "--first-token-ms",
        type=float,
        help=f"simulated model: ms to the first token ({d.first_token_ms:g})",
    )
    p.add_argument(
        "--post-latency-ms",
        type=float,
        help=f"injected per @connections post ({d.post_latency_ms:g})",
    )
    p.add_argument(
        "--publish-latency-ms",
        type=float,
        help=f"injected per AppSync publish ({d.publish_latency_ms:g})",
    )
    p.add_argument("--flush-ms", type=int, help=f"FLUSH_INTERVAL_MS ({d.flush_interval_ms})")
    levels = ",".join(map(str, d.levels))
    p.add_argument(
        "--levels",
        type=_ints,
        help=f"concurrent streams ({levels}; deployed: {','.join(map(str, dd['levels']))})",
    )
    p.add_argument("--repeats", type=int, help=f"one-stream runs ({d.repeats})")
    p.add_argument("--architectures", type=_names, default=d.architectures)
    p.add_argument("--no-baseline", action="store_true", help="skip the per-token baseline")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    g = p.add_argument_group("deployed target")
    g.add_argument(
        "--outputs",
        type=Path,
        default=DEFAULT_OUTPUTS,
        help="the stack's outputs (cdk deploy --outputs-file); default .local/stack-outputs.json",
    )
    g.add_argument("--stack", help="the stack's name in the outputs file (default LlmStream)")
    g.add_argument(
        "--create-users",
        action="store_true",
        help="create bench users with Cognito admin calls (deleted afterwards) instead of "
        "signing in as BENCH_USERNAME / BENCH_PASSWORD",
    )
    a = p.parse_args(argv)
    values = {k: getattr(a, k) for k in ("tokens", "levels", "repeats")}
    if a.target == "deployed":
        given = [f"--{k.replace('_', '-')}" for k in LOCAL_ONLY if getattr(a, k) is not None]
        if given or a.no_baseline:
            p.error(
                f"{', '.join(given or ['--no-baseline'])}: local cloud settings; a deployed "
                "stack has its own model, latencies and sender"
            )
        values = {k: DEPLOYED_DEFAULTS[k] if v is None else v for k, v in values.items()}
    elif a.create_users or a.stack is not None or a.outputs != DEFAULT_OUTPUTS:
        p.error("--outputs, --stack and --create-users apply to --target deployed only")

    def pick(name: str, default: Any) -> Any:
        value = values.get(name, getattr(a, name, None))
        return default if value is None else value

    scenario = Scenario(
        tokens=pick("tokens", d.tokens),
        tokens_per_second=pick("rate", d.tokens_per_second),
        first_token_ms=pick("first_token_ms", d.first_token_ms),
        post_latency_ms=pick("post_latency_ms", d.post_latency_ms),
        publish_latency_ms=pick("publish_latency_ms", d.publish_latency_ms),
        flush_interval_ms=pick("flush_ms", d.flush_interval_ms),
        levels=pick("levels", d.levels),
        repeats=pick("repeats", d.repeats),
        architectures=a.architectures,
        baseline=a.target == "local" and not a.no_baseline,
    )
    try:
        scenario.validate()
    except ValueError as exc:
        p.error(str(exc))
    return Options(scenario, a.out, a.target, a.outputs, a.stack, a.create_users)


def write(results: dict[str, Any], out: Path, stem: str = "latest") -> str:
    """Write ``<stem>.md``, ``<stem>.json`` and the plot (``lag.png``, or
    ``<stem>-lag.png``) to ``out``; returns the markdown."""
    plot_name = "lag.png" if stem == "latest" else f"{stem}-lag.png"
    summary = report.summaries(results)
    text = report.markdown(results, summary, report.machine(), plot_name)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(report.to_json(results, summary))
    report.plot(results, out / plot_name)
    return text


def _deployed(options: Options, progress: Callable[[str], None]) -> dict[str, Any]:
    outputs = deployed.load_outputs(options.outputs, options.stack)
    if "rest_stream" in options.scenario.architectures and not outputs.rest_stream_url:
        raise deployed.DeployedError(
            f"stack {outputs.stack} has no RestStreamUrl output (deployed before the REST "
            "API's streaming routes): redeploy it, or pass --architectures without rest_stream"
        )
    config = deployed.public_config(outputs)
    per_user = (config.get("limits") or {}).get("maxStreamsPerUser")
    users = deployed.bench_users(
        outputs, options.create_users, int(per_user or deployed.DEFAULT_STREAMS_PER_USER)
    )
    try:
        model = (config.get("model") or {}).get("id") or "the stack's model"
        progress(
            f"deployed: stack {outputs.stack} in {outputs.region}, model {model}; at most "
            f"{deployed.model_tokens_at_most(options.scenario):,} output tokens in all"
        )
        return asyncio.run(deployed.run(options.scenario, outputs, users, config, progress))
    finally:
        users.close()


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    if options.target == "deployed":
        try:
            results = _deployed(options, progress)
        except deployed.DeployedError as exc:
            print(f"python -m bench --target deployed: {exc}", file=sys.stderr)
            return 2
        stem = "deployed"
    else:
        results = asyncio.run(runner.run(options.scenario, progress))
        stem = "latest"
    text = write(results, options.out, stem)
    print()
    print(text)
    plot = "lag.png" if stem == "latest" else f"{stem}-lag.png"
    print(f"Written to {options.out}/{stem}.md, {stem}.json and {plot}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
