import type { MetricDef } from '../stats/definitions';

/** A metric's name with its definition one click away. */
export function MetricName({ metric }: { metric: MetricDef }) {
  return (
    <details className="help">
      <summary>
        {metric.label}
        <span className="help-mark" aria-hidden="true">
          ?
        </span>
      </summary>
      <p>{metric.definition}</p>
    </details>
  );
}
