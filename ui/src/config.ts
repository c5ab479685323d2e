// Where the API and the agent are, read at start from `/config.json` (served by
// `voxgate serve`), so one build runs on one domain or several. Build-time
// variables (VITE_API_BASE, VITE_AGENT_URL, VITE_SUPABASE_*) fill what the runtime
// file leaves empty, and are all there is on a static host without `/config.json`.

export interface AppConfig {
  /** The API base, e.g. `/api` or `https://api.example.com/api` (no trailing slash). */
  apiBase: string;
  /** The agent's WebSocket URL, e.g. `wss://example.com/agent`. */
  agentUrl: string;
  supabaseUrl?: string;
  supabaseAnonKey?: string;
}

type Raw = Partial<Record<keyof AppConfig, unknown>>;

function text(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

/** The agent URL for a page at `location` when none is configured: same host, `/agent`. */
export function defaultAgentUrl(location: { protocol: string; host: string }): string {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/agent`;
}

/** Joins runtime and build-time settings; runtime wins where it says something. */
export function resolveConfig(
  runtime: Raw | null,
  build: { apiBase?: string; agentUrl?: string; supabaseUrl?: string; supabaseAnonKey?: string },
  location: { protocol: string; host: string },
): AppConfig {
  const r = runtime ?? {};
  const apiBase = (text(r.apiBase) ?? text(build.apiBase) ?? '/api').replace(/\/+$/, '');
  let agentUrl = text(r.agentUrl) ?? text(build.agentUrl) ?? defaultAgentUrl(location);
  // A page on https may not open ws:// (mixed content): upgrade a configured plain URL.
  if (location.protocol === 'https:' && agentUrl.startsWith('ws://')) agentUrl = 'wss://' + agentUrl.slice(5);
  if (agentUrl.startsWith('/')) agentUrl = defaultAgentUrl(location).replace(/\/agent$/, '') + agentUrl;
  return {
    apiBase,
    agentUrl,
    supabaseUrl: text(r.supabaseUrl) ?? text(build.supabaseUrl),
    supabaseAnonKey: text(r.supabaseAnonKey) ?? text(build.supabaseAnonKey),
  };
}

let current: AppConfig | null = null;

export function config(): AppConfig {
  if (!current) throw new Error('the configuration is not loaded yet');
  return current;
}

export async function loadConfig(): Promise<AppConfig> {
  let runtime: Raw | null = null;
  try {
    const res = await fetch('/config.json', { cache: 'no-cache' });
    if (res.ok && (res.headers.get('content-type') ?? '').includes('json')) {
      const v = await res.json();
      if (v && typeof v === 'object' && !Array.isArray(v)) runtime = v as Raw;
    }
  } catch {
    // No runtime file (a static host): build-time settings only.
  }
  const env = import.meta.env;
  current = resolveConfig(
    runtime,
    {
      apiBase: env.VITE_API_BASE,
      agentUrl: env.VITE_AGENT_URL,
      supabaseUrl: env.VITE_SUPABASE_URL,
      supabaseAnonKey: env.VITE_SUPABASE_ANON_KEY,
    },
    window.location,
  );
  return current;
}
