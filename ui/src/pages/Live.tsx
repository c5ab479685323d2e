// The live view: calls in progress and voice-to-voice latency percentiles over the
// last half hour, minute by minute. The API has no aggregate endpoint, so this polls
// `GET /api/calls` (in progress, and started in the window) and reads each call's
// turns, keeping ended calls' turns since they no longer change.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api';
import type { Assistant, Call } from '../types';
import { ErrorBox, Link } from '../components/ui';
import { bucketPercentiles, fmtDuration, fmtMs, percentile, totalMs, type Bucket, type Sample } from '../stats';

const WINDOW_MS = 30 * 60_000;
const BUCKET_MS = 60_000;
const POLL_MS = 3000;
const MAX_DETAILS_PER_POLL = 20;

function PercentileChart({ buckets }: { buckets: Bucket[] }) {
  const w = 600;
  const h = 180;
  const left = 60;
  const top = 10;
  const max = Math.max(100, ...buckets.flatMap((b) => [b.p99, b.p90, b.p50].filter(Number.isFinite)));
  const x = (i: number) => left + (i / Math.max(1, buckets.length - 1)) * (w - left - 8);
  const y = (v: number) => top + h - (v / max) * h;
  const series = [
    { key: 'p50' as const, color: '#0ea5e9' },
    { key: 'p90' as const, color: '#f59e0b' },
    { key: 'p99' as const, color: '#ef4444' },
  ];
  return (
    <figure class="chart" data-testid="percentile-chart">
      <figcaption>Voice to voice, per minute (last 30 minutes)</figcaption>
      <svg viewBox={`0 0 ${w} ${h + top + 24}`} class="wide" role="img" aria-label="Latency percentiles per minute">
        {[0, max / 2, max].map((t) => (
          <g key={t}>
            <line x1={left} x2={w} y1={y(t)} y2={y(t)} class="grid" />
            <text x={left - 4} y={y(t) + 4} text-anchor="end" class="axis">
              {fmtMs(t)}
            </text>
          </g>
        ))}
        {series.map((s) => {
          const pts = buckets.map((b, i) => (Number.isFinite(b[s.key]) ? `${x(i)},${y(b[s.key])}` : null));
          // Gaps (minutes without turns) break the line.
          const segments: string[][] = [[]];
          for (const p of pts) {
            if (p) segments[segments.length - 1].push(p);
            else if (segments[segments.length - 1].length) segments.push([]);
          }
          return segments.map((seg, j) =>
            seg.length === 1 ? (
              <circle key={`${s.key}${j}`} cx={seg[0].split(',')[0]} cy={seg[0].split(',')[1]} r={3} fill={s.color} />
            ) : seg.length > 1 ? (
              <polyline key={`${s.key}${j}`} points={seg.join(' ')} fill="none" stroke={s.color} stroke-width={2} />
            ) : null,
          );
        })}
        <text x={left} y={h + top + 18} class="axis">
          −30 min
        </text>
        <text x={w - 8} y={h + top + 18} text-anchor="end" class="axis">
          now
        </text>
      </svg>
      <ul class="legend">
        {series.map((s) => (
          <li key={s.key}>
            <span class="swatch" style={{ background: s.color }} /> {s.key}
          </li>
        ))}
      </ul>
    </figure>
  );
}

export function Live() {
  const [active, setActive] = useState<Call[]>([]);
  const [samples, setSamples] = useState<Sample[]>([]);
  const [names, setNames] = useState<Map<string, string>>(new Map());
  const [error, setError] = useState<unknown>(null);
  const [updated, setUpdated] = useState<Date | null>(null);
  const [, setTick] = useState(0);
  const cache = useRef(new Map<string, Call>());

  useEffect(() => {
    api
      .assistants()
      .then((p) => setNames(new Map(p.items.map((a: Assistant) => [a.id, a.name]))))
      .catch(() => {});
    let stop = false;
    let timer: number | undefined;
    const poll = async () => {
      try {
        const since = new Date(Date.now() - WINDOW_MS).toISOString();
        const [live, recent] = await Promise.all([
          api.calls({ status: 'in-progress', limit: 100 }),
          api.calls({ startedAfter: since, limit: 100 }),
        ]);
        if (stop) return;
        setActive(live.items);
        // Details for calls whose turns may have changed: in progress, or not read since they ended.
        const todo = recent.items.filter((c) => c.status === 'in-progress' || cache.current.get(c.id)?.status !== 'ended');
        const fetched = await Promise.all(todo.slice(0, MAX_DETAILS_PER_POLL).map((c) => api.call(c.id).catch(() => null)));
        for (const c of fetched) if (c) cache.current.set(c.id, c);
        const cutoff = Date.now() - WINDOW_MS;
        const out: Sample[] = [];
        for (const [id, c] of cache.current) {
          const start = Date.parse(c.startedAt);
          if (start < cutoff - 4 * 3600_000) {
            cache.current.delete(id);
            continue;
          }
          for (const t of c.turns ?? []) {
            if (t.role !== 'assistant') continue;
            const v = totalMs(t.latency);
            if (v > 0) out.push({ t: start + t.startedMs, v });
          }
        }
        if (stop) return;
        setSamples(out);
        setError(null);
        setUpdated(new Date());
      } catch (e) {
        if (!stop) setError(e);
      }
      if (!stop) timer = window.setTimeout(poll, POLL_MS);
    };
    void poll();
    const ticker = window.setInterval(() => setTick((t) => t + 1), 1000);
    return () => {
      stop = true;
      clearTimeout(timer);
      clearInterval(ticker);
    };
  }, []);

  const now = Date.now();
  const from = Math.floor((now - WINDOW_MS) / BUCKET_MS) * BUCKET_MS;
  const buckets = bucketPercentiles(samples, from, from + WINDOW_MS + BUCKET_MS, BUCKET_MS);
  const windowValues = samples.filter((s) => s.t >= now - WINDOW_MS).map((s) => s.v);
  return (
    <section>
      <div class="title-row">
        <h1>Live</h1>
        <span class="muted small" role="status">
          {updated ? `Updated ${updated.toLocaleTimeString()}` : 'Loading…'}
        </span>
      </div>
      <ErrorBox error={error} />
      <div class="stats">
        <div class="stat">
          <span class="stat-value" data-testid="active-count">
            {active.length}
          </span>
          <span class="stat-label">calls in progress</span>
        </div>
        {(['50', '90', '99'] as const).map((p) => (
          <div class="stat" key={p}>
            <span class="stat-value">{fmtMs(percentile(windowValues, Number(p)))}</span>
            <span class="stat-label">p{p} voice to voice</span>
          </div>
        ))}
        <div class="stat">
          <span class="stat-value">{windowValues.length}</span>
          <span class="stat-label">turns, last 30 min</span>
        </div>
      </div>
      <PercentileChart buckets={buckets} />
      <h2>In progress</h2>
      {active.length === 0 ? (
        <p class="muted">No call in progress.</p>
      ) : (
        <ul class="cards">
          {active.map((c) => (
            <li class="card" key={c.id}>
              <Link href={`/calls/${c.id}`}>{names.get(c.assistantId) ?? c.assistantId}</Link>
              <span class="muted small">
                {' '}
                for {fmtDuration(now - Date.parse(c.startedAt))} · {c.instance ?? ''}
              </span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
