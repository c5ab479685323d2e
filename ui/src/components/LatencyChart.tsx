// The per-turn latency chart: one stacked bar per assistant turn (endpointing,
// speech to text, model first token, voice first audio), with the voice-to-voice
// time above it, and the same numbers as a table for screen readers and keyboards.

import { OTHER, STAGES, fmtMs, otherMs, stageValues, totalMs } from '../stats';
import type { TurnLatency } from '../types';

export interface ChartTurn {
  label: string;
  latency: TurnLatency;
}

export function LatencyChart({ turns, title = 'Latency per turn' }: { turns: ChartTurn[]; title?: string }) {
  if (turns.length === 0) return <p class="muted">No turn with latency yet.</p>;
  const rows = turns.map((t) => ({ ...t, v: stageValues(t.latency), other: otherMs(t.latency), total: totalMs(t.latency) }));
  const max = Math.max(1, ...rows.map((r) => Math.max(r.total, STAGES.reduce((n, s) => n + r.v[s.key], 0) + r.other)));
  const barW = 36;
  const gap = 14;
  const h = 180;
  const top = 18;
  const left = 60;
  const width = left + rows.length * (barW + gap) + gap;
  const ticks = [0, max / 2, max];
  return (
    <figure class="chart" data-testid="latency-chart">
      <figcaption>{title}</figcaption>
      <div class="chart-scroll">
        <svg viewBox={`0 0 ${width} ${h + top + 24}`} width={width} height={h + top + 24} role="img" aria-label={`${title}: stacked bars by stage`}>
          {ticks.map((t) => {
            const y = top + h - (t / max) * h;
            return (
              <g key={t}>
                <line x1={left} x2={width} y1={y} y2={y} class="grid" />
                <text x={left - 4} y={y + 4} text-anchor="end" class="axis">
                  {fmtMs(t)}
                </text>
              </g>
            );
          })}
          {rows.map((r, i) => {
            const x = left + gap + i * (barW + gap);
            let y = top + h;
            return (
              <g key={i}>
                {STAGES.map((s) => {
                  const bh = (r.v[s.key] / max) * h;
                  y -= bh;
                  return bh > 0 ? (
                    <rect x={x} y={y} width={barW} height={bh} fill={s.color}>
                      <title>{`${r.label} ${s.label}: ${fmtMs(r.v[s.key])}`}</title>
                    </rect>
                  ) : null;
                })}
                {r.other > 0 && (
                  <rect x={x} y={y - (r.other / max) * h} width={barW} height={(r.other / max) * h} fill={OTHER.color}>
                    <title>{`${r.label} ${OTHER.label}: ${fmtMs(r.other)}`}</title>
                  </rect>
                )}
                <text x={x + barW / 2} y={top + h - (r.total / max) * h - 4} text-anchor="middle" class="axis">
                  {fmtMs(r.total)}
                </text>
                <text x={x + barW / 2} y={top + h + 16} text-anchor="middle" class="axis">
                  {r.label}
                </text>
              </g>
            );
          })}
        </svg>
      </div>
      <ul class="legend">
        {STAGES.map((s) => (
          <li key={s.key}>
            <span class="swatch" style={{ background: s.color }} /> {s.label}
          </li>
        ))}
        <li>
          <span class="swatch" style={{ background: OTHER.color }} /> {OTHER.label}
        </li>
      </ul>
      <details>
        <summary>Numbers</summary>
        <div class="table-scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Turn</th>
                {STAGES.map((s) => (
                  <th scope="col" key={s.key}>
                    {s.label}
                  </th>
                ))}
                <th scope="col">Queue wait</th>
                <th scope="col">Voice to voice</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r, i) => (
                <tr key={i}>
                  <th scope="row">{r.label}</th>
                  {STAGES.map((s) => (
                    <td key={s.key}>{fmtMs(r.latency[s.key])}</td>
                  ))}
                  <td>{fmtMs(r.latency.queueWaitMs)}</td>
                  <td>{fmtMs(r.latency.voiceToVoiceMs)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}
