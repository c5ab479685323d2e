// The API client: one `request` that adds the bearer token, and turns every failure
// into an `ApiError` whose message is plain words for the page (the API's errors are
// `{"error":{"code","message","fields"?}}`).

import { config } from './config';
import { currentToken, signOut } from './auth';
import type { Assistant, AssistantSpec, Call, CallToken, Me, Page } from './types';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly fields: { field: string; message: string }[] = [],
  ) {
    super(message);
  }
}

/** Plain words for an error body (or its absence). */
export function errorFromBody(status: number, statusText: string, body: unknown): ApiError {
  const e = (body as { error?: { code?: unknown; message?: unknown; fields?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code : `http-${status}`;
  let message = typeof e?.message === 'string' && e.message ? e.message : '';
  const fields: { field: string; message: string }[] = [];
  if (Array.isArray(e?.fields)) {
    for (const f of e.fields as unknown[]) {
      const ff = f as { field?: unknown; message?: unknown };
      if (typeof ff?.field === 'string' && typeof ff?.message === 'string') fields.push({ field: ff.field, message: ff.message });
    }
  }
  if (!message) {
    message =
      status === 401
        ? 'You are not signed in, or your key is no longer valid.'
        : status === 403
          ? 'This key may not do that.'
          : status === 404
            ? 'Not found.'
            : status === 429
              ? 'Too many requests; wait a moment and try again.'
              : status >= 500
                ? `The server failed (${status}${statusText ? ' ' + statusText : ''}). Try again in a moment.`
                : `The server answered ${status}${statusText ? ' ' + statusText : ''}.`;
  }
  if (message.length > 500) message = message.slice(0, 500) + '…';
  return new ApiError(message, status, code, fields);
}

export async function request<T>(method: string, path: string, body?: unknown, opts: { raw?: boolean; auth?: boolean } = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (opts.auth !== false) {
    const token = await currentToken();
    if (token) headers.authorization = `Bearer ${token}`;
  }
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  const url = config().apiBase + path;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(`Cannot reach the server (${config().apiBase}). Is voxgate running, and is this address right?`, 0, 'network');
  }
  if (!res.ok) {
    let parsed: unknown = null;
    try {
      parsed = await res.json();
    } catch {
      /* not JSON: a proxy's page */
    }
    const err = errorFromBody(res.status, res.statusText, parsed);
    if (res.status === 401 && opts.auth !== false) signOut(err.message);
    throw err;
  }
  if (opts.raw) return res as unknown as T;
  if (res.status === 204) return undefined as T;
  try {
    return (await res.json()) as T;
  } catch {
    throw new ApiError('The server sent an answer this page cannot read.', res.status, 'bad-response');
  }
}

const q = (params: Record<string, string | number | undefined>) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') s.set(k, String(v));
  const out = s.toString();
  return out ? `?${out}` : '';
};

export const api = {
  me: () => request<Me>('GET', '/me'),
  login: (code: string) => request<{ secret: string }>('POST', '/auth/login', { code }, { auth: false }),
  assistants: (cursor?: string) => request<Page<Assistant>>('GET', `/assistants${q({ limit: 100, cursor })}`),
  assistant: (id: string) => request<Assistant>('GET', `/assistants/${encodeURIComponent(id)}`),
  createAssistant: (spec: Partial<AssistantSpec>) => request<Assistant>('POST', '/assistants', spec),
  updateAssistant: (id: string, patch: unknown) => request<Assistant>('PATCH', `/assistants/${encodeURIComponent(id)}`, patch),
  deleteAssistant: (id: string) => request<void>('DELETE', `/assistants/${encodeURIComponent(id)}`),
  calls: (f: { assistantId?: string; status?: string; startedAfter?: string; startedBefore?: string; cursor?: string; limit?: number }) =>
    request<Page<Call>>('GET', `/calls${q({ limit: 50, ...f })}`),
  call: (id: string) => request<Call>('GET', `/calls/${encodeURIComponent(id)}`),
  callToken: (assistantId: string) => request<CallToken>('POST', '/calls', { assistantId }),
  recording: async (id: string) => {
    const res = await request<Response>('GET', `/calls/${encodeURIComponent(id)}/recording`, undefined, { raw: true });
    return res.blob();
  },
};
