import { describe, expect, it } from 'vitest';
import { mergePatchDiff } from '../src/patch';
import { bucketPercentiles, percentile, totalMs } from '../src/stats';
import { resolveConfig } from '../src/config';
import { errorFromBody } from '../src/api';

describe('merge patch from the stored assistant to the edited one', () => {
  it('sends only what changed, nulls for what was removed, arrays whole', () => {
    const from = { name: 'a', model: { temperature: 0.7, model: 'x', baseUrl: null }, tools: [{ name: 't' }], metadata: { k: 1, j: 2 } };
    const to = { name: 'a', model: { temperature: 0.5, model: null, baseUrl: null }, tools: [{ name: 't' }, { name: 'u' }], metadata: { k: 1 } };
    expect(mergePatchDiff(from, to)).toEqual({ model: { temperature: 0.5, model: null }, tools: [{ name: 't' }, { name: 'u' }], metadata: { j: null } });
    expect(mergePatchDiff(from, structuredClone(from))).toBeUndefined();
  });
});

describe('percentiles', () => {
  it('interpolates between ranks and ignores non-numbers', () => {
    const xs = [100, 200, 300, 400, 500, NaN];
    expect(percentile(xs, 50)).toBe(300);
    expect(percentile(xs, 90)).toBeCloseTo(460);
    expect(percentile(xs, 0)).toBe(100);
    expect(percentile(xs, 100)).toBe(500);
    expect(percentile([], 50)).toBeNaN();
    expect(percentile([7], 99)).toBe(7);
  });

  it('buckets samples by minute', () => {
    const from = 1_000_000;
    const samples = [
      { t: from + 1000, v: 100 },
      { t: from + 2000, v: 300 },
      { t: from + 61_000, v: 50 },
      { t: from - 1, v: 9999 }, // before the window
    ];
    const b = bucketPercentiles(samples, from, from + 180_000, 60_000);
    expect(b).toHaveLength(3);
    expect(b[0]).toMatchObject({ t: from, n: 2, p50: 200 });
    expect(b[1]).toMatchObject({ n: 1, p99: 50 });
    expect(b[2].n).toBe(0);
    expect(b[2].p50).toBeNaN();
  });

  it('uses voice to voice, else the sum of the stages', () => {
    expect(totalMs({ voiceToVoiceMs: 900, sttMs: 5 })).toBe(900);
    expect(totalMs({ endpointingMs: 500, sttMs: 100, llmFirstTokenMs: 200, ttsFirstAudioMs: 50 })).toBe(850);
  });
});

describe('runtime configuration', () => {
  const http = { protocol: 'http:', host: '127.0.0.1:3010' };
  const https = { protocol: 'https:', host: 'voice.example.com' };
  it('defaults to the same host, ws on http and wss on https', () => {
    expect(resolveConfig(null, {}, http)).toEqual({ apiBase: '/api', agentUrl: 'ws://127.0.0.1:3010/agent', supabaseUrl: undefined, supabaseAnonKey: undefined });
    expect(resolveConfig({ apiBase: '/api', agentUrl: '' }, {}, https).agentUrl).toBe('wss://voice.example.com/agent');
  });
  it('runtime settings win over build-time ones, which fill the gaps', () => {
    const c = resolveConfig(
      { apiBase: 'https://api.example.com/api/', agentUrl: 'wss://ws.example.com/agent', supabaseUrl: null },
      { apiBase: '/other', supabaseUrl: 'https://x.supabase.co', supabaseAnonKey: 'anon' },
      https,
    );
    expect(c).toEqual({ apiBase: 'https://api.example.com/api', agentUrl: 'wss://ws.example.com/agent', supabaseUrl: 'https://x.supabase.co', supabaseAnonKey: 'anon' });
    expect(resolveConfig(null, { apiBase: 'https://api.example.com/api' }, https).apiBase).toBe('https://api.example.com/api');
  });
  it('never opens ws:// from an https page', () => {
    expect(resolveConfig({ agentUrl: 'ws://voice.example.com/agent' }, {}, https).agentUrl).toBe('wss://voice.example.com/agent');
  });
});

describe('API errors in plain words', () => {
  it('keeps the API message and field errors', () => {
    const e = errorFromBody(422, 'Unprocessable Entity', {
      error: { code: 'validation', message: 'the assistant is not valid', fields: [{ field: 'name', message: 'must not be empty' }, { bad: 1 }] },
    });
    expect(e.message).toBe('the assistant is not valid');
    expect(e.code).toBe('validation');
    expect(e.fields).toEqual([{ field: 'name', message: 'must not be empty' }]);
  });
  it('explains a body that is not the API’s (a proxy page)', () => {
    expect(errorFromBody(502, 'Bad Gateway', null).message).toBe('The server failed (502 Bad Gateway). Try again in a moment.');
    expect(errorFromBody(401, '', 'html').message).toMatch(/not signed in/);
  });
});
