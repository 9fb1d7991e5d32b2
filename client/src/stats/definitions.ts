/**
 * The metrics the comparison reports for every run, with their definitions: one list for
 * the tables, the help popovers, the CSV header and the distribution chart.
 */

export type MetricKey =
  | 'setupMs'
  | 'ttftMs'
  | 'modelFirstTokenMs'
  | 'overheadMs'
  | 'streamingMs'
  | 'streamingLagMs'
  | 'completionDelayMs'
  | 'totalMs'
  | 'longestPauseMs'
  | 'charsPerSecond'
  | 'tokensPerSecond';

export interface MetricDef {
  key: MetricKey;
  label: string;
  unit: 'ms' | 'per-s';
  /** Which way is better. */
  better: 'lower' | 'higher';
  /** One or two sentences, shown in the metric's help popover. */
  definition: string;
}

export const MIN_RATE_WINDOW_MS = 1000;

export const METRICS: readonly MetricDef[] = [
  {
    key: 'setupMs',
    label: 'Connection setup',
    unit: 'ms',
    better: 'lower',
    definition:
      'Request sent → the transport can deliver: Function URL response headers, WebSocket open, AppSync subscription acknowledged (start_ack).',
  },
  {
    key: 'ttftMs',
    label: 'First token',
    unit: 'ms',
    better: 'lower',
    definition: 'Request sent → the first delta with text arrived in the browser.',
  },
  {
    key: 'modelFirstTokenMs',
    label: 'Model first token',
    unit: 'ms',
    better: 'lower',
    definition:
      "The model's own time to its first text, as the producer measured it (the terminal frame's metrics.modelFirstTokenMs): the part of the first token no architecture can change.",
  },
  {
    key: 'overheadMs',
    label: 'Architecture overhead to first token',
    unit: 'ms',
    better: 'lower',
    definition:
      'First token − model first token: what the architecture adds before the first text (setup, auth, starting the producer, delivery).',
  },
  {
    key: 'streamingMs',
    label: 'Streaming',
    unit: 'ms',
    better: 'lower',
    definition: 'First text arrived → last text arrived, in the browser.',
  },
  {
    key: 'streamingLagMs',
    label: 'Streaming lag',
    unit: 'ms',
    better: 'lower',
    definition:
      "Streaming − the model's own first-to-last-token time (metrics.modelLatencyMs − modelFirstTokenMs): how much longer the text took to arrive than the model took to write it. Near 0 means delivery kept up; about one flush interval is expected.",
  },
  {
    key: 'completionDelayMs',
    label: 'Completion delay',
    unit: 'ms',
    better: 'lower',
    definition:
      "Last text arrived → terminal frame arrived: how long the stream stayed open after the model's last token.",
  },
  {
    key: 'totalMs',
    label: 'Total',
    unit: 'ms',
    better: 'lower',
    definition: 'Request sent → terminal frame arrived.',
  },
  {
    key: 'longestPauseMs',
    label: 'Longest pause',
    unit: 'ms',
    better: 'lower',
    definition: 'The longest time between two consecutive frames from the first text to the end: smoothness.',
  },
  {
    key: 'charsPerSecond',
    label: 'Chars / s',
    unit: 'per-s',
    better: 'higher',
    definition: `Characters after the first delta ÷ the window from the first text to the terminal frame (to now while streaming). Shown once the window is at least ${MIN_RATE_WINDOW_MS / 1000} s long.`,
  },
  {
    key: 'tokensPerSecond',
    label: 'Tokens / s',
    unit: 'per-s',
    better: 'higher',
    definition: `The done frame's usage.outputTokens ÷ the window from the first text to the terminal frame; known once the stream is done and the window is at least ${MIN_RATE_WINDOW_MS / 1000} s long.`,
  },
];

export const METRIC_BY_KEY: Readonly<Record<MetricKey, MetricDef>> = Object.fromEntries(
  METRICS.map((m) => [m.key, m]),
) as Record<MetricKey, MetricDef>;
