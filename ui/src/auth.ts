// Who the page is signed in as: a private key (from the one-time login link, or
// pasted), or a Supabase Auth session whose access token is the bearer token. The
// key lives in localStorage under the same name the fallback page uses.

import { config } from './config';

const KEY = 'voxgate.key';

type SupabaseClient = import('@supabase/supabase-js').SupabaseClient;

export type AuthState =
  | { kind: 'signed-out'; message?: string }
  | { kind: 'key'; key: string }
  | { kind: 'supabase'; email: string | null };

let state: AuthState = { kind: 'signed-out' };
const listeners = new Set<(s: AuthState) => void>();
let supabase: SupabaseClient | null = null;

function set(s: AuthState): void {
  state = s;
  for (const fn of listeners) fn(s);
}

export function authState(): AuthState {
  return state;
}

export function onAuth(fn: (s: AuthState) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function supabaseConfigured(): boolean {
  const c = config();
  return Boolean(c.supabaseUrl && c.supabaseAnonKey);
}

/** The Supabase client, loaded on first use (its code is a separate chunk). */
async function sb(): Promise<SupabaseClient> {
  if (!supabase) {
    const { createClient } = await import('@supabase/supabase-js');
    const c = config();
    supabase = createClient(c.supabaseUrl!, c.supabaseAnonKey!, { auth: { persistSession: true, autoRefreshToken: true } });
    supabase.auth.onAuthStateChange((_event, session) => {
      if (session) set({ kind: 'supabase', email: session.user.email ?? null });
      else if (state.kind === 'supabase') set({ kind: 'signed-out' });
    });
  }
  return supabase;
}

/** Restores the sign-in kept by an earlier visit. */
export async function restore(): Promise<void> {
  let key: string | null = null;
  try {
    key = localStorage.getItem(KEY);
  } catch {
    /* storage disabled */
  }
  if (key) {
    set({ kind: 'key', key });
    return;
  }
  if (supabaseConfigured()) {
    try {
      const { data } = await (await sb()).auth.getSession();
      if (data.session) set({ kind: 'supabase', email: data.session.user.email ?? null });
    } catch {
      /* Supabase unreachable: stay signed out */
    }
  }
}

export function rememberKey(key: string): void {
  const k = key.trim();
  try {
    localStorage.setItem(KEY, k);
  } catch {
    /* storage disabled: this tab only */
  }
  set({ kind: 'key', key: k });
}

export async function supabaseSignIn(email: string, password: string): Promise<void> {
  const { error } = await (await sb()).auth.signInWithPassword({ email, password });
  if (error) throw new Error(error.message);
}

export async function supabaseMagicLink(email: string): Promise<void> {
  const { error } = await (await sb()).auth.signInWithOtp({ email, options: { emailRedirectTo: window.location.origin + '/' } });
  if (error) throw new Error(error.message);
}

/** The bearer token for the API: the key, or the Supabase access token (refreshed by its client). */
export async function currentToken(): Promise<string | null> {
  if (state.kind === 'key') return state.key;
  if (state.kind === 'supabase' && supabase) {
    const { data } = await supabase.auth.getSession();
    return data.session?.access_token ?? null;
  }
  return null;
}

export function signOut(message?: string): void {
  try {
    localStorage.removeItem(KEY);
  } catch {
    /* storage disabled */
  }
  if (supabase) void supabase.auth.signOut();
  set({ kind: 'signed-out', message });
}
