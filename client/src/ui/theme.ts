import type { TransportName } from '../transports/types';
import { useEffect, useState } from 'react';

export type Scheme = 'light' | 'dark';

const QUERY = '(prefers-color-scheme: dark)';

/** The colour scheme the browser asks for, following changes. */
export function useColorScheme(): Scheme {
  const get = (): Scheme => (typeof matchMedia === 'function' && matchMedia(QUERY).matches ? 'dark' : 'light');
  const [scheme, setScheme] = useState<Scheme>(get);
  useEffect(() => {
    if (typeof matchMedia !== 'function') return;
    const mq = matchMedia(QUERY);
    const on = () => setScheme(mq.matches ? 'dark' : 'light');
    mq.addEventListener('change', on);
    return () => mq.removeEventListener('change', on);
  }, []);
  return scheme;
}

/** Axis and grid colours for uPlot, which draws on a canvas (no CSS variables there). */
export const CHART_INK: Record<Scheme, { axis: string; grid: string }> = {
  light: { axis: '#333333', grid: '#e3e3e3' },
  dark: { axis: '#d6d9de', grid: '#3a3f47' },
};

/** Colour-blind-safe colours (Okabe-Ito), lighter in the dark scheme, plus a dash pattern per line. */
export const SERIES_STYLE: Record<Scheme, Record<TransportName, { color: string; dash: number[] }>> = {
  light: {
    functionUrl: { color: '#0072B2', dash: [] },
    websocket: { color: '#D55E00', dash: [8, 4] },
    appsync: { color: '#009E73', dash: [2, 3] },
  },
  dark: {
    functionUrl: { color: '#56B4E9', dash: [] },
    websocket: { color: '#E69F00', dash: [8, 4] },
    appsync: { color: '#3FD1A4', dash: [2, 3] },
  },
};
