// Latency arithmetic for the call page and the live view: stage breakdowns of a
// turn and percentiles over many turns.

import type { TurnLatency } from './types';

export const STAGES = [
  { key: 'endpointingMs', label: 'Endpointing', color: '#8b5cf6' },
  { key: 'sttMs', label: 'Speech to text', color: '#0ea5e9' },
  { key: 'llmFirstTokenMs', label: 'Model (first token)', color: '#f59e0b' },
  { key: 'ttsFirstAudioMs', label: 'Voice (first audio)', color: '#10b981' },
] as const;

export type StageKey = (typeof STAGES)[number]['key'];

/** The part of voice to voice the stages do not account for (queueing, the first clause, the platform). */
export const OTHER = { label: 'Other (queue, first clause, platform)', color: '#94a3b8' };

export function otherMs(l: TurnLatency): number {
  const v = stageValues(l);
  const sum = STAGES.reduce((n, s) => n + v[s.key], 0);
  return typeof l.voiceToVoiceMs === 'number' && Number.isFinite(l.voiceToVoiceMs) ? Math.max(0, l.voiceToVoiceMs - sum) : 0;
}

export function stageValues(l: TurnLatency): Record<StageKey, number> {
  const out = {} as Record<StageKey, number>;
  for (const s of STAGES) {
    const v = l[s.key];
    out[s.key] = typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
  }
  return out;
}

/** A turn's voice-to-voice time, or the sum of its stages when the server gave none. */
export function totalMs(l: TurnLatency): number {
  if (typeof l.voiceToVoiceMs === 'number' && Number.isFinite(l.voiceToVoiceMs)) return l.voiceToVoiceMs;
  const v = stageValues(l);
  return STAGES.reduce((n, s) => n + v[s.key], 0);
}

export function hasLatency(l: TurnLatency | undefined | null): boolean {
  if (!l) return false;
  return Object.values(l).some((v) => typeof v === 'number' && Number.isFinite(v));
}

/** The p-th percentile (0-100) by linear interpolation between closest ranks; NaN when empty. */
export function percentile(values: number[], p: number): number {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  if (xs.length === 1) return xs[0];
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (xs.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo);
}

export function fmtMs(v: number | null | undefined): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  return v >= 10000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
}

export function fmtDuration(ms: number | null | undefined): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export interface Sample {
  /** When the turn happened (ms since the epoch). */
  t: number;
  v: number;
}

export interface Bucket {
  t: number;
  n: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Percentiles of the samples in each `bucketMs` window from `from` to `to` (empty windows have n = 0 and NaN). */
export function bucketPercentiles(samples: Sample[], from: number, to: number, bucketMs: number): Bucket[] {
  const out: Bucket[] = [];
  const count = Math.max(1, Math.ceil((to - from) / bucketMs));
  const groups: number[][] = Array.from({ length: count }, () => []);
  for (const s of samples) {
    if (s.t < from || s.t >= to || !Number.isFinite(s.v)) continue;
    groups[Math.floor((s.t - from) / bucketMs)].push(s.v);
  }
  for (let i = 0; i < count; i++) {
    const g = groups[i];
    out.push({ t: from + i * bucketMs, n: g.length, p50: percentile(g, 50), p90: percentile(g, 90), p99: percentile(g, 99) });
  }
  return out;
}
