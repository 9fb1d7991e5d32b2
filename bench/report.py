"""The benchmark's results: summaries, the targets, the markdown report and the plot."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import costs
from bench.metrics import summarize
from bench.scenario import LABELS, MODE_LABELS, Scenario

NONE = "\u2013"  # an en dash: no figure
LAG_FLOOR_MS = 0.5


def _streams(levels: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [s for level in levels for s in level["streams"]]


def summaries(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per mode and architecture: the default scenario, its costs and the sweep."""
    scenario: Scenario = results["scenario"]
    primary = primary_mode(results)
    out: dict[str, Any] = {"single": {}, "sweep": {}, "costs": {}}
    for mode, run in results["modes"].items():
        for arch, single in run["single"].items():
            streams = _streams(single["runs"])
            summary = summarize(streams)
            summary["serverCalls"] = _server_calls(single["runs"])
            summary["dynamodb"] = single["calls"]
            out["single"][(mode, arch)] = summary
            usage = costs.usage_per_stream(arch, streams, single["calls"])
            out["costs"][(mode, arch)] = {
                "usage": usage,
                "usd": costs.cost_per_1000_streams(usage),
            }
        if mode != primary:
            continue
        for arch in scenario.architectures:
            rows = []
            first = run["single"][arch]["runs"][0]
            for level in [first, *run["sweep"][arch]]:
                s = summarize(level["streams"])
                rows.append(
                    {
                        **s,
                        "concurrency": level["concurrency"],
                        "errors": level["errors"],
                        "serverCalls": level["serverCalls"],
                        "resources": level["resources"],
                    }
                )
            # Level 1 is the default scenario: its figures over every repeat.
            rows[0] = {**rows[0], **_lag_figures(out["single"][(primary, arch)])}
            out["sweep"][arch] = rows
    return out


def primary_mode(results: Mapping[str, Any]) -> str:
    """The mode the targets and the sweep are about: the coalescing sender locally, the
    stack as deployed otherwise."""
    return next(iter(results["modes"]))


def deployed(results: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """What the deployed target was (stack, region, model), None for the local cloud."""
    return results.get("target")


def _lag_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "lagP99Ms",
        "completionP99Ms",
        "ttftAddedP99Ms",
        "lost",
        "duplicates",
        "failed",
        "streams",
        "frames",
        "messages",
        "modelDriftMaxMs",
    )
    return {k: summary[k] for k in keys}


def _server_calls(levels: list[Mapping[str, Any]]) -> int | None:
    counts = [level["serverCalls"] for level in levels]
    return None if any(c is None for c in counts) else sum(counts)


# -- targets --------------------------------------------------------------------------------


def targets(results: Mapping[str, Any], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each README target per architecture: the limit, the measured figure, met or not."""
    scenario: Scenario = results["scenario"]
    primary = primary_mode(results)
    target = deployed(results)
    flush_ms = float((target or {}).get("flushIntervalMs") or scenario.flush_interval_ms)
    rows = []
    for arch in scenario.architectures:
        s = summary["single"][(primary, arch)]
        latency = scenario.latency_ms(arch)
        hop = s["startToModelP50Ms"] if arch == "appsync" else None
        ttft_limit = latency + scenario.lag_margin_ms + (hop or 0.0)
        sweep = summary["sweep"][arch]
        top = sweep[-1]
        checks = [
            ("completion delay p99", s["completionP99Ms"], scenario.completion_target_ms, "ms"),
            (
                "per-frame lag p99",
                s["lagP99Ms"],
                flush_ms + latency + scenario.lag_margin_ms,
                "ms",
            ),
            ("time to first token added (p99)", s["ttftAddedP99Ms"], ttft_limit, "ms"),
            ("publish calls per 1,000 tokens", s["callsPer1kTokens"], 100.0, ""),
            (
                f"lost + duplicate frames, failed streams at {top['concurrency']} streams",
                float(top["lost"] + top["duplicates"] + top["failed"]),
                0.0,
                "",
            ),
            (
                f"lag p99 at {top['concurrency']} streams (≤ {scenario.concurrency_lag_factor:g}x "
                "one stream)",
                top["lagP99Ms"],
                scenario.concurrency_lag_factor * sweep[0]["lagP99Ms"],
                "ms",
            ),
        ]
        for name, measured, limit, unit in checks:
            rows.append(
                {
                    "architecture": arch,
                    "target": name,
                    "limit": limit,
                    "measured": measured,
                    "unit": unit,
                    "met": (not math.isnan(measured)) and measured <= limit,
                    "queueHopMs": hop if name.startswith("time to first") else None,
                }
            )
    return rows


# -- markdown -------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def _bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else NONE
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cpus": os.cpu_count(),
        "loadAverage": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "node": node_version,
        "platform": platform.platform(terse=True),
    }


def markdown(
    results: Mapping[str, Any],
    summary: Mapping[str, Any],
    host: Mapping[str, Any],
    plot_name: str = "lag.png",
) -> str:
    scenario: Scenario = results["scenario"]
    modes = list(results["modes"])
    target = deployed(results)
    lines = ["# Benchmark results" + (": deployed stack" if target else ""), ""]
    if target is None:
        lines += [
            f"Scenario: {scenario.describe()}. Default scenario: one stream at a time "
            f"({scenario.repeats} runs per architecture with the coalescing sender, one with "
            f"the per-token baseline); concurrency sweep: "
            f"{', '.join(str(n) for n in scenario.levels)} streams of one architecture at "
            "once. Every figure is measured on the client against the simulated model's emit "
            "times, on one machine clock.",
            "",
        ]
    else:
        lines += _deployed_intro(results, target)
    lines += [
        f"Machine: {host['cpus']} CPUs, load average {host['loadAverage'][0]} at the end, "
        f"Python {host['python']}, Node.js {host['node']}, {host['platform']}. "
        f"Benchmark wall time {results['wallSeconds']:.0f} s.",
        "",
        "## One stream",
        "",
        "| Architecture | Sender | TTFT added | Lag p50 | Lag p99 | Lag max | Completion delay "
        "p99 | Publish calls / 1,000 tokens | Frames / stream | Bytes on the wire / stream |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch in scenario.architectures:
        for mode in modes:
            s = summary["single"][(mode, arch)]
            n = s["streams"]
            lines.append(
                f"| {LABELS[arch]} | {MODE_LABELS[mode]} | {_ms(s['ttftAddedP99Ms'])} | "
                f"{_ms(s['lagP50Ms'])} | {_ms(s['lagP99Ms'])} | {_ms(s['lagMaxMs'])} | "
                f"{_ms(s['completionP99Ms'])} | {s['callsPer1kTokens']:.0f} | "
                f"{s['frames'] / n:.0f} | {_bytes(s['wireBytes'] / n)} |"
            )
    lines += [
        "",
        "TTFT added: the client's first delta minus the model's first token. Lag: a frame's "
        "receive time minus the model's emit time of the last token it carries. Completion "
        "delay: the terminal frame minus the model's last token. Publish calls: "
        "`@connections` posts, AppSync publishes, SSE events (the Function URL writes to its "
        "own response). Bytes: frame payloads as received (SSE event text, WebSocket "
        "messages, AppSync `data` messages).",
        "",
        f"## Targets ({MODE_LABELS[modes[0]]})",
        "",
        "| Architecture | Target | Limit | Measured | Met |",
        "|---|---|---|---|---|",
    ]
    for t in targets(results, summary):
        fmt = _ms if t["unit"] == "ms" else (lambda v: f"{v:.0f}")
        limit = fmt(t["limit"])
        if t["queueHopMs"] is not None:
            limit += f" (incl. queue hop {_ms(t['queueHopMs'])})"
        lines.append(
            f"| {LABELS[t['architecture']]} | {t['target']} | ≤ {limit} | "
            f"{fmt(t['measured'])} | {'yes' if t['met'] else '**no**'} |"
        )
    if target is not None:
        lines += [
            "",
            "The limits are the local scenario's, with its allowance of "
            f"{scenario.post_latency_ms:g} ms per `@connections` post and "
            f"{scenario.publish_latency_ms:g} ms per AppSync publish standing for AWS's own; "
            "the measured delays are upper bounds (see above).",
        ]
    lines += [
        "",
        f"## Concurrency sweep ({MODE_LABELS[modes[0]]})",
        "",
        "| Architecture | Streams | Failed | Lost | Duplicate | Lag p99 | Completion p99 | "
        "TTFT added p99 | Frames / stream | Cloud CPU | Cloud peak RSS | Model drift max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch in scenario.architectures:
        for row in summary["sweep"][arch]:
            res = row["resources"]
            cpu = f"{res['cpuSeconds']:.1f} s ({res['cores']:.2f} cores)" if res else NONE
            rss = f"{res['peakRssMb']:.0f} MB" if res else NONE
            lines.append(
                f"| {LABELS[arch]} | {row['concurrency']} | {row['failed']} | {row['lost']} | "
                f"{row['duplicates']} | {_ms(row['lagP99Ms'])} | {_ms(row['completionP99Ms'])} "
                f"| {_ms(row['ttftAddedP99Ms'])} | {row['frames'] / row['streams']:.0f} | "
                f"{cpu} | {rss} | {_ms(row['modelDriftMaxMs'])} |"
            )
    lines += [
        "",
        "Cloud CPU and RSS: the local cloud's process tree (`python -m local` and its "
        "Node.js Function URL host) over the level, from `/proc`. Model drift: how far the "
        "emulator's last token fell behind its schedule (the machine being saturated)."
        if target is None
        else "Cloud CPU, RSS and model drift are local-cloud figures: not measured on a "
        "deployed stack (Lambda's own metrics are in CloudWatch).",
        "",
        "## Cost per 1,000 streams (AWS, Bedrock excluded)",
        "",
        "| Architecture | Sender | Lambda | API Gateway | AppSync | SQS | DynamoDB | Total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in scenario.architectures:
        for mode in modes:
            usd = summary["costs"][(mode, arch)]["usd"]
            cells = [usd.get(k) for k in ("lambda", "apigw", "appsync", "sqs", "dynamodb")]
            money = " | ".join(NONE if c is None else f"${c:.3f}" for c in cells)
            lines.append(
                f"| {LABELS[arch]} | {MODE_LABELS[mode]} | {money} | **${usd['total']:.3f}** |"
            )
    lines += [
        "",
        "Per stream, as measured:",
        "",
        "| Architecture | Sender | Lambda GB-s | API Gateway messages | AppSync operations "
        "| AppSync real-time updates | DynamoDB WRU | DynamoDB RRU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in scenario.architectures:
        for mode in modes:
            u = summary["costs"][(mode, arch)]["usage"]

            def q(key: str, digits: int = 0, u: Mapping[str, float] = u) -> str:
                return NONE if key not in u else f"{u[key]:.{digits}f}"

            lines.append(
                f"| {LABELS[arch]} | {MODE_LABELS[mode]} | {q('lambda_gb_s', 2)} | "
                f"{q('apigw_ws_message')} | {q('appsync_operation')} | "
                f"{q('appsync_realtime_update')} | {q('dynamodb_wru')} | {q('dynamodb_rru')} |"
            )
    if target is not None:
        lines += [
            "",
            "DynamoDB and SQS requests are not counted on AWS (locally they are counted at "
            "the local cloud's moto server): their columns are empty and the totals leave them "
            "out; the local report's per-stream counts apply, as they follow from the "
            "protocol, not from the deployment. Lambda GB-s are bounded from the client side "
            "as locally, with the memory sizes the stack configures.",
        ]
    lines += [
        "",
        f"Prices ({costs.PRICE_REGION}, as published on {costs.PRICE_DATE}; free tiers not "
        "applied):",
        "",
        "| Item | USD | Per | Source |",
        "|---|---|---|---|",
    ]
    for key, price in costs.PRICES.items():
        usd = f"{price.usd * 1e6:.6g} per million"
        lines.append(f"| `{key}` | {usd} | {price.per} | <{price.source}> |")
    lines += ["", "## Lag over time", "", f"![Per-frame lag over time]({plot_name})", ""]
    return "\n".join(lines)


def _deployed_intro(results: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    scenario: Scenario = results["scenario"]
    model_id = target.get("modelId")
    model = target.get("modelLabel") or model_id or "the stack's model"
    if model_id and model_id != model:
        model += f" (`{model_id}`)"
    return [
        f"Target: stack `{target['stack']}` in {target['region']}, model {model}; "
        f"at most {scenario.tokens} output tokens per stream (`maxTokens`), the prompt asking "
        f"for a long answer. Default scenario: one stream at a time ({scenario.repeats} runs "
        f"per architecture); concurrency sweep: {', '.join(str(n) for n in scenario.levels)} "
        "streams of one architecture at once. The stack's own sender, flush interval "
        f"({target.get('flushIntervalMs') or NONE} ms, from `GET /config`) and publish "
        "latencies; no per-token baseline (the sender mode is a deploy-time setting).",
        "",
        "**Model emit times are not known on a deployed stack.** Every figure that needs them "
        "uses the terminal frame's model metrics instead: the model's first token is taken at "
        "start request + `metrics.modelFirstTokenMs` (the producer's time from calling the "
        "model to its first text), its last at start request + `metrics.modelLatencyMs` "
        "(Bedrock's latency), and a frame's emit time is interpolated between the two by its "
        "position in the text. TTFT added, per-frame lag and completion delay therefore "
        "include the start request's way to the producer (the queue hop on AppSync, the "
        "generator's invocation on WebSocket): upper bounds, on the client's clock. Text "
        "completeness: a gap-free transcript ending with `done` and some text (the answer "
        "itself is not known). Server-side publish counts, the cloud's CPU and memory, and "
        "DynamoDB/SQS call counts are not measured on AWS.",
        "",
    ]


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Lag over time, one panel per architecture, the baseline beside the coalescing
    sender (log scale: the baseline's lag grows by seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario: Scenario = results["scenario"]
    archs = scenario.architectures
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.6), sharey=True)
    axes = [axes] if len(archs) == 1 else list(axes)
    styles = {"coalesce": ("tab:blue", "-"), "per_token": ("tab:red", "-")}
    top = 100.0
    for ax, arch in zip(axes, archs, strict=True):
        for mode, run in results["modes"].items():
            first = run["single"][arch]["runs"][0]["streams"][0]
            series = first.get("lagSeries") or []
            if not series:
                continue
            xs = [t for t, _ in series]
            # Log scale: a lag under half a millisecond (or below zero, from the emit-time
            # interpolation) is drawn at the floor.
            ys = [max(lag, LAG_FLOOR_MS) for _, lag in series]
            color, style = styles.get(mode, ("tab:gray", "-"))
            ax.plot(xs, ys, style, color=color, linewidth=1.2, label=MODE_LABELS[mode])
            top = max(top, *ys)
        flush_ms = float(
            (deployed(results) or {}).get("flushIntervalMs") or scenario.flush_interval_ms
        )
        limit = flush_ms + scenario.latency_ms(arch) + scenario.lag_margin_ms
        ax.axhline(limit, color="tab:green", linestyle="--", linewidth=1, label="lag target")
        ax.set_yscale("log")
        ax.set_title(LABELS[arch], fontsize=10)
        ax.set_xlabel("seconds since the model's first token")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylim(LAG_FLOOR_MS, top * 2)  # shared by every panel
    axes[0].set_ylabel("per-frame lag (ms, log)")
    axes[0].legend(fontsize=8, loc="upper left")
    target = deployed(results)
    fig.suptitle(
        f"{scenario.tokens} tokens at {scenario.tokens_per_second:g}/s; "
        f"{scenario.post_latency_ms:g} ms per post, {scenario.publish_latency_ms:g} ms per "
        "publish"
        if target is None
        else f"stack {target['stack']} ({target['region']}), at most {scenario.tokens} tokens; "
        "lag estimated from the model's reported metrics",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def to_json(results: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """The summary figures (no per-frame series), for tools."""

    def key(k: Any) -> str:
        return ":".join(k) if isinstance(k, tuple) else str(k)

    def clean(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {key(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    scenario: Scenario = results["scenario"]
    doc = {
        "scenario": {k: v for k, v in vars(scenario).items() if k != "extra_env"},
        **({"target": results["target"]} if "target" in results else {}),
        "wallSeconds": results["wallSeconds"],
        "single": summary["single"],
        "sweep": summary["sweep"],
        "costsPer1000Streams": summary["costs"],
    }
    return json.dumps(clean(doc), indent=1) + "\n"
