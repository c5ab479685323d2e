// The calls: a list with filters (assistant, status, time range), kept in the URL so
// a filtered list can be linked; and one call with its transcript, latency chart
// and recording.

import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import type { Assistant, Call } from '../types';
import { ErrorBox, Link, Loading } from '../components/ui';
import { LatencyChart } from '../components/LatencyChart';
import { navigate } from '../router';
import { fmtDuration, fmtTime, hasLatency } from '../stats';

function toIso(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export function Calls({ query }: { query: URLSearchParams }) {
  const filters = {
    assistantId: query.get('assistantId') ?? '',
    status: query.get('status') ?? '',
    after: query.get('after') ?? '',
    before: query.get('before') ?? '',
  };
  const [assistants, setAssistants] = useState<Assistant[]>([]);
  const [calls, setCalls] = useState<Call[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const key = query.toString();

  const load = async (after?: string) => {
    setError(null);
    try {
      const page = await api.calls({
        assistantId: filters.assistantId || undefined,
        status: filters.status || undefined,
        startedAfter: toIso(filters.after),
        startedBefore: toIso(filters.before),
        cursor: after,
      });
      setCalls((prev) => (after && prev ? [...prev, ...page.items] : page.items));
      setCursor(page.nextCursor);
    } catch (e) {
      setError(e);
    }
  };

  useEffect(() => {
    api.assistants().then((p) => setAssistants(p.items)).catch(() => {});
  }, []);
  useEffect(() => {
    setCalls(null);
    void load();
  }, [key]);

  const setFilter = (name: string, value: string) => {
    const q = new URLSearchParams(query);
    if (value) q.set(name, value);
    else q.delete(name);
    const s = q.toString();
    navigate(`/calls${s ? `?${s}` : ''}`, true);
  };
  const names = new Map(assistants.map((a) => [a.id, a.name]));

  return (
    <section>
      <div class="title-row">
        <h1>Calls</h1>
        <button onClick={() => load()}>Refresh</button>
      </div>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter calls">
        <label>
          Assistant
          <select value={filters.assistantId} onChange={(e) => setFilter('assistantId', e.currentTarget.value)}>
            <option value="">All</option>
            {assistants.map((a) => (
              <option key={a.id} value={a.id}>
                {a.name}
              </option>
            ))}
            {filters.assistantId && !names.has(filters.assistantId) && <option value={filters.assistantId}>{filters.assistantId}</option>}
          </select>
        </label>
        <label>
          Status
          <select value={filters.status} onChange={(e) => setFilter('status', e.currentTarget.value)}>
            <option value="">Any</option>
            <option value="in-progress">In progress</option>
            <option value="ended">Ended</option>
          </select>
        </label>
        <label>
          Started after
          <input type="datetime-local" value={filters.after} onChange={(e) => setFilter('after', e.currentTarget.value)} />
        </label>
        <label>
          Started before
          <input type="datetime-local" value={filters.before} onChange={(e) => setFilter('before', e.currentTarget.value)} />
        </label>
      </form>
      <ErrorBox error={error} />
      {calls === null && !error && <Loading what="calls" />}
      {calls?.length === 0 && <p>No call matches.</p>}
      {calls && calls.length > 0 && (
        <div class="table-scroll">
          <table class="calls" data-testid="calls-table">
            <thead>
              <tr>
                <th scope="col">Started</th>
                <th scope="col">Assistant</th>
                <th scope="col">Status</th>
                <th scope="col">Duration</th>
                <th scope="col">Ended because</th>
              </tr>
            </thead>
            <tbody>
              {calls.map((c) => (
                <tr key={c.id}>
                  <td>
                    <Link href={`/calls/${c.id}`}>{fmtTime(c.startedAt)}</Link>
                  </td>
                  <td>{names.get(c.assistantId) ?? <code>{c.assistantId}</code>}</td>
                  <td>
                    <span class={`badge ${c.status}`}>{c.status === 'in-progress' ? 'in progress' : 'ended'}</span>
                  </td>
                  <td>{fmtDuration(c.durationMs)}</td>
                  <td>{c.endedReason ?? '–'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && <button onClick={() => load(cursor)}>Load more</button>}
    </section>
  );
}

export function CallDetail({ id }: { id: string }) {
  const [call, setCall] = useState<Call | null>(null);
  const [assistant, setAssistant] = useState<Assistant | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [recording, setRecording] = useState<string | null>(null);
  const [recError, setRecError] = useState<unknown>(null);

  useEffect(() => {
    let stop = false;
    let timer: number | undefined;
    const load = async () => {
      try {
        const c = await api.call(id);
        if (stop) return;
        setCall(c);
        setError(null);
        if (c.status === 'in-progress') timer = window.setTimeout(load, 2000);
      } catch (e) {
        if (!stop) setError(e);
      }
    };
    void load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [id]);

  useEffect(() => {
    if (call && !assistant) api.assistant(call.assistantId).then(setAssistant).catch(() => {});
  }, [call?.assistantId]);

  useEffect(() => () => {
    if (recording) URL.revokeObjectURL(recording);
  }, [recording]);

  const loadRecording = async () => {
    setRecError(null);
    try {
      const blob = await api.recording(id);
      setRecording(URL.createObjectURL(blob));
    } catch (e) {
      setRecError(e);
    }
  };

  if (!call) return error ? <ErrorBox error={error} /> : <Loading what="the call" />;
  const turns = call.turns ?? [];
  const chartTurns = turns.filter((t) => t.role === 'assistant' && hasLatency(t.latency)).map((t) => ({ label: `#${t.idx}`, latency: t.latency }));
  return (
    <section>
      <div class="title-row">
        <h1>Call {assistant ? `with ${assistant.name}` : ''}</h1>
        <Link href="/calls" class="button">
          All calls
        </Link>
      </div>
      <ErrorBox error={error} />
      <dl class="facts">
        <dt>Started</dt>
        <dd>{fmtTime(call.startedAt)}</dd>
        <dt>Status</dt>
        <dd>
          <span class={`badge ${call.status}`}>{call.status === 'in-progress' ? 'in progress' : 'ended'}</span>
        </dd>
        <dt>Duration</dt>
        <dd>{fmtDuration(call.durationMs)}</dd>
        <dt>Ended because</dt>
        <dd>{call.endedReason ?? '–'}</dd>
        <dt>Assistant</dt>
        <dd>
          <Link href={`/assistants/${call.assistantId}`}>{assistant?.name ?? call.assistantId}</Link>
        </dd>
        <dt>Call id</dt>
        <dd>
          <code>{call.id}</code>
        </dd>
      </dl>

      <LatencyChart turns={chartTurns} />

      <h2>Transcript</h2>
      {turns.length === 0 ? (
        <p class="muted">No turns.</p>
      ) : (
        <ol class="transcript" data-testid="call-transcript">
          {turns.map((t) => (
            <li key={t.idx} class={`line ${t.role}`}>
              <span class="who">{t.role === 'user' ? 'Caller' : t.role === 'assistant' ? 'Assistant' : t.role}</span> {t.text}
              {t.interrupted && <em class="muted"> (interrupted)</em>}
              {t.error && <em class="muted" data-testid="turn-error"> (not transcribed: {t.error.message})</em>}
              <span class="muted small"> · {fmtDuration(t.startedMs)}</span>
            </li>
          ))}
        </ol>
      )}

      <h2>Recording</h2>
      {call.recordingUrl ? (
        recording ? (
          <audio controls src={recording} data-testid="recording" />
        ) : (
          <button onClick={loadRecording}>Load the recording</button>
        )
      ) : (
        <p class="muted">No recording (turn on “Record calls” on the assistant).</p>
      )}
      <ErrorBox error={recError} />
    </section>
  );
}
