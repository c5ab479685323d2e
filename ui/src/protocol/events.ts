// The `/agent` protocol (`voxgate.v1`, docs/agent-protocol.md) as the browser sees
// it: server events parsed at the edge into a union, checked field by field. The
// server is outside input: anything malformed is refused here with a reason, and
// event types this client does not know are passed on as `unknown` (the server may
// add events within v1).

export type Role = 'user' | 'assistant';

export interface Latency {
  turn?: number;
  endpointingMs?: number;
  sttMs?: number;
  llmFirstTokenMs?: number;
  ttsFirstAudioMs?: number;
  queueWaitMs?: number;
  voiceToVoiceMs?: number;
  responseMs?: number;
}

export interface AudioFormat {
  encoding: string;
  sampleRate: number;
}

export type ServerEvent =
  | { type: 'call-started'; callId: string; assistantId: string; protocol: string; input?: AudioFormat; output?: AudioFormat }
  | { type: 'speech-started' }
  | { type: 'speech-stopped' }
  | { type: 'transcript'; role: Role; text: string; final: boolean }
  | { type: 'bot-speech-started' }
  | { type: 'bot-speech-stopped' }
  | { type: 'interruption' }
  | ({ type: 'latency' } & Latency)
  | { type: 'tool-call'; id: string; name: string; arguments: unknown }
  | { type: 'error'; code: string; message: string }
  | { type: 'call-ended'; reason: string }
  | { type: 'pong'; id?: unknown }
  | { type: 'unknown'; rawType: string };

export type Parsed = { ok: true; event: ServerEvent } | { ok: false; reason: string };

const LATENCY_FIELDS = [
  'endpointingMs',
  'sttMs',
  'llmFirstTokenMs',
  'ttsFirstAudioMs',
  'queueWaitMs',
  'voiceToVoiceMs',
  'responseMs',
] as const;

const MAX_TEXT = 64 * 1024;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, k: string, max = MAX_TEXT): string | undefined {
  const v = o[k];
  return typeof v === 'string' && v.length <= max ? v : undefined;
}

function num(o: Record<string, unknown>, k: string): number | undefined {
  const v = o[k];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function format(v: unknown): AudioFormat | undefined {
  if (!isObj(v)) return undefined;
  const encoding = str(v, 'encoding', 32);
  const sampleRate = num(v, 'sampleRate');
  return encoding !== undefined && sampleRate !== undefined && sampleRate > 0 ? { encoding, sampleRate } : undefined;
}

const bad = (reason: string): Parsed => ({ ok: false, reason });

/** Parses one text message from the server. Never throws. */
export function parseServerEvent(text: string): Parsed {
  if (text.length > 1024 * 1024) return bad('message too long');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return bad('not JSON');
  }
  if (!isObj(v)) return bad('not a JSON object');
  const type = str(v, 'type', 64);
  if (type === undefined) return bad('no `type`');
  switch (type) {
    case 'call-started': {
      const callId = str(v, 'callId', 128);
      const assistantId = str(v, 'assistantId', 128);
      if (callId === undefined || assistantId === undefined) return bad('call-started without callId or assistantId');
      return {
        ok: true,
        event: { type, callId, assistantId, protocol: str(v, 'protocol', 64) ?? '', input: format(v.input), output: format(v.output) },
      };
    }
    case 'speech-started':
    case 'speech-stopped':
    case 'bot-speech-started':
    case 'bot-speech-stopped':
    case 'interruption':
      return { ok: true, event: { type } };
    case 'transcript': {
      const role = v.role;
      const text = str(v, 'text');
      if ((role !== 'user' && role !== 'assistant') || text === undefined) return bad('transcript without a role or text');
      const final = v.final === undefined ? true : v.final;
      if (typeof final !== 'boolean') return bad('transcript `final` is not a boolean');
      return { ok: true, event: { type, role, text, final } };
    }
    case 'latency': {
      const ev: { type: 'latency' } & Latency = { type };
      const turn = num(v, 'turn');
      if (turn !== undefined) ev.turn = turn;
      for (const k of LATENCY_FIELDS) {
        if (v[k] === undefined || v[k] === null) continue;
        const n = num(v, k);
        if (n === undefined || n < 0) return bad(`latency ${k} is not a non-negative number`);
        ev[k] = n;
      }
      return { ok: true, event: ev };
    }
    case 'tool-call': {
      const name = str(v, 'name', 256);
      if (name === undefined) return bad('tool-call without a name');
      return { ok: true, event: { type, id: str(v, 'id', 256) ?? '', name, arguments: v.arguments } };
    }
    case 'error': {
      const code = str(v, 'code', 128);
      if (code === undefined) return bad('error without a code');
      return { ok: true, event: { type, code, message: str(v, 'message', 4096) ?? code } };
    }
    case 'call-ended': {
      const reason = str(v, 'reason', 128);
      if (reason === undefined) return bad('call-ended without a reason');
      return { ok: true, event: { type, reason } };
    }
    case 'pong':
      return { ok: true, event: { type, id: v.id } };
    default:
      return { ok: true, event: { type: 'unknown', rawType: type } };
  }
}

/** Plain words for a close code and the call's ended reason, for the person on the call. */
export function describeClose(code: number, reason: string, endedReason?: string): string {
  const why = endedReason ?? reason;
  const byReason: Record<string, string> = {
    'customer-ended-call': 'You ended the call.',
    'assistant-ended-call': 'The assistant ended the call.',
    'silence-timed-out': 'The call ended after a long silence.',
    'exceeded-max-duration': 'The call reached its longest allowed duration.',
    'assistant-said-end-call-phrase': 'The assistant said goodbye and ended the call.',
    'assistant-ended-call-with-tool': 'The assistant ended the call.',
    'key-revoked': 'The key this call used was revoked.',
    'server-shutdown': 'The server is restarting; start the call again.',
    'slow-client': 'This browser stopped reading audio in time, so the server ended the call.',
    'pipeline-error': 'The server failed during the call.',
  };
  // After `call-ended`, its reason says how the call ended, whatever the close code
  // (a socket reset right after the event reports 1006).
  if (code === 1006 && endedReason !== undefined && byReason[endedReason]) return byReason[endedReason];
  switch (code) {
    case 1000:
      return byReason[why] ?? 'The call ended.';
    case 1002:
    case 1007:
      return `The server refused a message from this page (${reason || 'protocol error'}).`;
    case 1006:
      return 'The connection to the server was lost.';
    case 1008:
      return byReason['key-revoked'];
    case 1009:
      return 'A message was too big for the server.';
    case 1011:
      return byReason['pipeline-error'];
    case 1012:
      return byReason['server-shutdown'];
    case 4001:
      return 'The server does not support this audio format.';
    case 4002:
      return 'The call did not start in time.';
    case 4003:
      return byReason['slow-client'];
    default:
      return byReason[why] ?? `The call closed (code ${code}${reason ? `: ${reason}` : ''}).`;
  }
}
