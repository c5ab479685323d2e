// Creating and editing an assistant: every field of its spec. A new assistant is
// POSTed whole; an edit is sent as the merge patch from the stored document.

import { useEffect, useState } from 'preact/hooks';
import type { JSX } from 'preact';
import { ApiError, api } from '../api';
import type { Assistant, AssistantSpec, Tool } from '../types';
import { ErrorBox, Loading } from '../components/ui';
import { navigate } from '../router';
import { mergePatchDiff } from '../patch';

const DEFAULT_SPEC: AssistantSpec = {
  name: '',
  systemPrompt: 'You are a helpful voice assistant. Keep answers short and spoken.',
  firstMessage: 'Hello! How can I help you today?',
  firstMessageMode: 'assistant-speaks-first',
  transcriber: { provider: 'local', model: null, language: null, baseUrl: null },
  model: { provider: 'local', model: null, temperature: 0.7, maxTokens: 250, baseUrl: null },
  voice: { provider: 'local', voice: null, model: null, speed: 1, baseUrl: null },
  endpointing: { silenceMs: 500, vadConfidence: 0.7, vadStartMs: 200, minVolume: 0 },
  interruption: { enabled: true, minVoicedMs: 300, minWords: 0, backoffMs: 0 },
  silenceTimeoutSecs: 30,
  maxDurationSecs: 600,
  endCallPhrases: [],
  tools: [],
  recordingEnabled: false,
  metadata: {},
};

function specOf(a: Assistant): AssistantSpec {
  const { id: _id, createdAt: _c, updatedAt: _u, ...spec } = a;
  return structuredClone({ ...DEFAULT_SPEC, ...spec });
}

type Path = string;

function getAt(obj: unknown, path: Path): unknown {
  return path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

function setAt<T>(obj: T, path: Path, value: unknown): T {
  const copy = structuredClone(obj) as Record<string, unknown>;
  const keys = path.split('.');
  let o = copy;
  for (const k of keys.slice(0, -1)) o = o[k] as Record<string, unknown>;
  o[keys[keys.length - 1]] = value;
  return copy as T;
}

interface ToolDraft {
  tool: Tool;
  parametersText: string;
}

export function AssistantForm({ id }: { id?: string }) {
  const [original, setOriginal] = useState<Assistant | null>(null);
  const [spec, setSpec] = useState<AssistantSpec | null>(id ? null : structuredClone(DEFAULT_SPEC));
  const [tools, setTools] = useState<ToolDraft[]>([]);
  const [phrases, setPhrases] = useState('');
  const [metadata, setMetadata] = useState('{}');
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);

  const adopt = (s: AssistantSpec) => {
    setSpec(s);
    setTools(s.tools.map((t) => ({ tool: t, parametersText: JSON.stringify(t.parameters ?? {}, null, 2) })));
    setPhrases(s.endCallPhrases.join('\n'));
    setMetadata(JSON.stringify(s.metadata ?? {}, null, 2));
  };

  useEffect(() => {
    if (!id) {
      adopt(structuredClone(DEFAULT_SPEC));
      return;
    }
    api
      .assistant(id)
      .then((a) => {
        setOriginal(a);
        adopt(specOf(a));
      })
      .catch(setError);
  }, [id]);

  if (!spec) return error ? <ErrorBox error={error} /> : <Loading what="the assistant" />;

  const fieldErrors = new Map<string, string>();
  if (error instanceof ApiError) for (const f of error.fields) fieldErrors.set(f.field, f.message);

  const update = (path: Path, value: unknown) => {
    setSpec((s) => (s ? setAt(s, path, value) : s));
    setSaved(false);
  };

  /** One labelled input bound to a path of the spec, with its error from the API. */
  const field = (
    path: Path,
    label: string,
    kind: 'text' | 'number' | 'textarea' | 'checkbox' | 'provider' = 'text',
    extra: JSX.InputHTMLAttributes<HTMLInputElement> & { hint?: string } = {},
  ) => {
    const v = getAt(spec, path);
    const err = fieldErrors.get(path);
    const inputId = `f-${path.replace(/\W/g, '-')}`;
    const describedBy = err ? `${inputId}-err` : undefined;
    const { hint, ...attrs } = extra;
    let input: JSX.Element;
    if (kind === 'textarea') {
      input = (
        <textarea id={inputId} rows={4} value={(v as string | null) ?? ''} aria-invalid={Boolean(err)} aria-describedby={describedBy}
          onInput={(e) => update(path, e.currentTarget.value === '' ? null : e.currentTarget.value)} />
      );
    } else if (kind === 'checkbox') {
      input = <input id={inputId} type="checkbox" checked={Boolean(v)} onChange={(e) => update(path, e.currentTarget.checked)} />;
    } else if (kind === 'provider') {
      input = (
        <select id={inputId} value={String(v)} onChange={(e) => update(path, e.currentTarget.value)}>
          <option value="local">local (offline models)</option>
          <option value="openai">openai (or compatible)</option>
        </select>
      );
    } else if (kind === 'number') {
      input = (
        <input id={inputId} type="number" inputMode="decimal" value={Number.isFinite(v as number) ? String(v) : ''} aria-invalid={Boolean(err)}
          aria-describedby={describedBy} {...attrs}
          onInput={(e) => update(path, e.currentTarget.value === '' ? NaN : Number(e.currentTarget.value))} />
      );
    } else {
      input = (
        <input id={inputId} type="text" value={(v as string | null) ?? ''} aria-invalid={Boolean(err)} aria-describedby={describedBy} {...attrs}
          onInput={(e) => update(path, e.currentTarget.value === '' ? null : e.currentTarget.value)} />
      );
    }
    return (
      <div class={kind === 'checkbox' ? 'field check' : 'field'}>
        <label for={inputId}>{label}</label>
        {input}
        {hint && <small class="muted">{hint}</small>}
        {err && (
          <small id={describedBy} class="field-error">
            {err}
          </small>
        )}
      </div>
    );
  };

  const collect = (): AssistantSpec => {
    const problems: string[] = [];
    const numbers = [
      'model.temperature', 'model.maxTokens', 'voice.speed', 'endpointing.silenceMs', 'endpointing.vadConfidence',
      'endpointing.vadStartMs', 'endpointing.minVolume', 'interruption.minVoicedMs', 'interruption.minWords',
      'interruption.backoffMs', 'silenceTimeoutSecs', 'maxDurationSecs',
    ];
    for (const p of numbers) if (!Number.isFinite(getAt(spec, p) as number)) problems.push(`${p} must be a number`);
    const outTools: Tool[] = tools.map((d, i) => {
      let parameters: Record<string, unknown> = {};
      try {
        const p = JSON.parse(d.parametersText || '{}');
        if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new Error();
        parameters = p;
      } catch {
        problems.push(`tools[${i}].parameters must be a JSON object`);
      }
      return { ...d.tool, url: d.tool.url || null, parameters };
    });
    let meta: Record<string, unknown> = {};
    try {
      const m = JSON.parse(metadata || '{}');
      if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new Error();
      meta = m;
    } catch {
      problems.push('metadata must be a JSON object');
    }
    if (problems.length) throw new Error(`Fix these first: ${problems.join('; ')}.`);
    return {
      ...spec,
      name: (spec.name ?? '').trim(),
      endCallPhrases: phrases.split('\n').map((p) => p.trim()).filter(Boolean),
      tools: outTools,
      metadata: meta,
    };
  };

  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const next = collect();
      if (original) {
        const patch = mergePatchDiff(specOf(original), next);
        const a = patch === undefined ? original : await api.updateAssistant(original.id, patch);
        setOriginal(a);
        adopt(specOf(a));
        setSaved(true);
      } else {
        const a = await api.createAssistant(next);
        navigate(`/assistants/${a.id}`, true);
        setSaved(true);
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const setTool = (i: number, d: { parametersText?: string; tool?: Partial<Tool> }) =>
    setTools((ts) => ts.map((t, j) => (j === i ? { ...t, ...d, tool: { ...t.tool, ...(d.tool ?? {}) } } : t)));

  return (
    <section>
      <div class="title-row">
        <h1>{original ? `Edit ${original.name}` : 'New assistant'}</h1>
        {original && (
          <button type="button" class="primary" onClick={() => navigate(`/talk/${original.id}`)}>
            Talk
          </button>
        )}
      </div>
      <form onSubmit={save} class="form" noValidate>
        <fieldset>
          <legend>Basics</legend>
          {field('name', 'Name', 'text', { required: true, maxLength: 120 })}
          {field('systemPrompt', 'System prompt', 'textarea')}
          <div class="field">
            <label for="f-firstMessageMode">Who speaks first</label>
            <select id="f-firstMessageMode" value={spec.firstMessageMode} onChange={(e) => update('firstMessageMode', e.currentTarget.value)}>
              <option value="assistant-speaks-first">The assistant (says the first message)</option>
              <option value="user-speaks-first">The caller</option>
            </select>
          </div>
          {field('firstMessage', 'First message', 'textarea')}
          {field('recordingEnabled', 'Record calls (stereo WAV)', 'checkbox')}
        </fieldset>

        <fieldset>
          <legend>Speech to text</legend>
          {field('transcriber.provider', 'Provider', 'provider')}
          {field('transcriber.model', 'Model', 'text', { hint: 'Empty: the provider’s default.' })}
          {field('transcriber.language', 'Language', 'text', { hint: 'A tag such as en or en-US.' })}
          {field('transcriber.baseUrl', 'Base URL', 'text', { inputMode: 'url' })}
        </fieldset>

        <fieldset>
          <legend>Language model</legend>
          {field('model.provider', 'Provider', 'provider')}
          {field('model.model', 'Model', 'text')}
          {field('model.temperature', 'Temperature (0 to 2)', 'number', { step: 0.1, min: 0, max: 2 })}
          {field('model.maxTokens', 'Most tokens a reply', 'number', { step: 1, min: 1, max: 16384 })}
          {field('model.baseUrl', 'Base URL', 'text', { inputMode: 'url' })}
        </fieldset>

        <fieldset>
          <legend>Voice</legend>
          {field('voice.provider', 'Provider', 'provider')}
          {field('voice.voice', 'Voice', 'text')}
          {field('voice.model', 'Model', 'text')}
          {field('voice.speed', 'Speed (0.25 to 4)', 'number', { step: 0.05, min: 0.25, max: 4 })}
          {field('voice.baseUrl', 'Base URL', 'text', { inputMode: 'url' })}
        </fieldset>

        <fieldset>
          <legend>Endpointing (when the caller’s turn is over)</legend>
          {field('endpointing.silenceMs', 'Silence that ends a turn (ms)', 'number', { step: 10, min: 100, max: 10000 })}
          {field('endpointing.vadConfidence', 'Voice confidence (0 to 1)', 'number', { step: 0.05, min: 0, max: 1 })}
          {field('endpointing.vadStartMs', 'Voice before speech starts (ms)', 'number', { step: 10, min: 0, max: 2000 })}
          {field('endpointing.minVolume', 'Minimum volume (0 to 1)', 'number', { step: 0.01, min: 0, max: 1 })}
        </fieldset>

        <fieldset>
          <legend>Interruptions</legend>
          {field('interruption.enabled', 'The caller may interrupt', 'checkbox')}
          {field('interruption.minVoicedMs', 'Voice needed to interrupt (ms)', 'number', { step: 10, min: 0, max: 5000 })}
          {field('interruption.minWords', 'Words needed to interrupt', 'number', { step: 1, min: 0, max: 20 })}
          {field('interruption.backoffMs', 'Wait after yielding (ms)', 'number', { step: 10, min: 0, max: 10000 })}
        </fieldset>

        <fieldset>
          <legend>Timeouts and ending</legend>
          {field('silenceTimeoutSecs', 'Silence before the call ends (s, 0: never)', 'number', { step: 1, min: 0, max: 3600 })}
          {field('maxDurationSecs', 'Longest call (s)', 'number', { step: 10, min: 10, max: 14400 })}
          <div class="field">
            <label for="f-phrases">End-call phrases (one a line)</label>
            <textarea id="f-phrases" rows={3} value={phrases} onInput={(e) => setPhrases(e.currentTarget.value)} />
          </div>
        </fieldset>

        <fieldset>
          <legend>Tools</legend>
          {tools.length === 0 && <p class="muted">No tools. The local model cannot call tools; OpenAI models can.</p>}
          {tools.map((d, i) => (
            <div class="tool" key={i}>
              <div class="field">
                <label for={`tool-${i}-type`}>Type</label>
                <select id={`tool-${i}-type`} value={d.tool.type} onChange={(e) => setTool(i, { tool: { type: e.currentTarget.value as Tool['type'] } })}>
                  <option value="function">function (calls your server)</option>
                  <option value="end-call">end-call</option>
                </select>
              </div>
              <div class="field">
                <label for={`tool-${i}-name`}>Name</label>
                <input id={`tool-${i}-name`} value={d.tool.name} onInput={(e) => setTool(i, { tool: { name: e.currentTarget.value } })} />
                {fieldErrors.get(`tools[${i}].name`) && <small class="field-error">{fieldErrors.get(`tools[${i}].name`)}</small>}
              </div>
              <div class="field">
                <label for={`tool-${i}-desc`}>Description</label>
                <input id={`tool-${i}-desc`} value={d.tool.description} onInput={(e) => setTool(i, { tool: { description: e.currentTarget.value } })} />
              </div>
              <div class="field">
                <label for={`tool-${i}-url`}>URL</label>
                <input id={`tool-${i}-url`} inputMode="url" value={d.tool.url ?? ''} onInput={(e) => setTool(i, { tool: { url: e.currentTarget.value } })} />
                {fieldErrors.get(`tools[${i}].url`) && <small class="field-error">{fieldErrors.get(`tools[${i}].url`)}</small>}
              </div>
              <div class="field">
                <label for={`tool-${i}-timeout`}>Timeout (ms)</label>
                <input id={`tool-${i}-timeout`} type="number" value={d.tool.timeoutMs} onInput={(e) => setTool(i, { tool: { timeoutMs: Number(e.currentTarget.value) } })} />
              </div>
              <div class="field">
                <label for={`tool-${i}-params`}>Parameters (JSON Schema)</label>
                <textarea id={`tool-${i}-params`} rows={4} class="mono" value={d.parametersText} onInput={(e) => setTool(i, { parametersText: e.currentTarget.value })} />
              </div>
              <button type="button" class="danger" onClick={() => setTools((ts) => ts.filter((_, j) => j !== i))}>
                Remove tool {d.tool.name}
              </button>
            </div>
          ))}
          <button
            type="button"
            onClick={() =>
              setTools((ts) => [
                ...ts,
                { tool: { type: 'function', name: `tool_${ts.length + 1}`, description: '', parameters: {}, url: '', timeoutMs: 5000 }, parametersText: '{\n  "type": "object",\n  "properties": {}\n}' },
              ])
            }
          >
            Add a tool
          </button>
        </fieldset>

        <fieldset>
          <legend>Metadata</legend>
          <div class="field">
            <label for="f-metadata">Free-form JSON kept with the assistant</label>
            <textarea id="f-metadata" rows={3} class="mono" value={metadata} onInput={(e) => setMetadata(e.currentTarget.value)} />
          </div>
        </fieldset>

        <ErrorBox error={error} />
        {saved && (
          <p role="status" class="ok">
            Saved.
          </p>
        )}
        <div class="row sticky-actions">
          <button class="primary" disabled={busy}>
            {original ? 'Save changes' : 'Create assistant'}
          </button>
          <button type="button" onClick={() => navigate('/assistants')}>
            Back to assistants
          </button>
        </div>
      </form>
    </section>
  );
}
