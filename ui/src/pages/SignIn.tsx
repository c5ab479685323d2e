// Signing in: the one-time link printed at first start (`/login#code=…`) is
// exchanged for a private key; or a key is pasted; or, when Supabase is configured,
// Supabase Auth (email and password, or an emailed link).

import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { supabaseConfigured, supabaseMagicLink, supabaseSignIn, rememberKey } from '../auth';
import { navigate } from '../router';
import { ErrorBox } from '../components/ui';

export function LoginLink() {
  const [error, setError] = useState<unknown>(null);
  const [key, setKey] = useState<string | null>(null);
  useEffect(() => {
    const code = new URLSearchParams(location.hash.slice(1)).get('code');
    // The code must not stay in the address bar or the history.
    history.replaceState(null, '', '/login');
    if (!code) {
      setError(new Error('This sign-in link has no code. Use the whole link printed by `voxgate serve`, or paste a key.'));
      return;
    }
    api
      .login(code)
      .then((res) => {
        rememberKey(res.secret);
        setKey(res.secret);
      })
      .catch(setError);
  }, []);
  if (error)
    return (
      <section class="narrow">
        <h1>Sign in</h1>
        <ErrorBox error={error} />
        <KeyForm />
      </section>
    );
  if (!key) return <p role="status">Signing in…</p>;
  return (
    <section class="narrow">
      <h1>You are signed in</h1>
      <p>This browser now holds a private key. It is shown this once: copy it if you want to use the API or another browser.</p>
      <p>
        <code class="secret" data-testid="new-key">
          {key}
        </code>
      </p>
      <button class="primary" onClick={() => navigate('/assistants')} autoFocus>
        Continue to assistants
      </button>
    </section>
  );
}

function KeyForm() {
  const [value, setValue] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const k = value.trim();
    if (!/^vg_sk_\S+$/.test(k)) {
      setError(new Error('A private key starts with vg_sk_. Create one with `voxgate keys create --name admin`.'));
      return;
    }
    setBusy(true);
    rememberKey(k);
    try {
      await api.me();
      // Signed in: the page asked for stays (a deep link), the sign-in pages move on.
      if (location.pathname === '/login' || location.pathname === '/') navigate('/assistants');
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form onSubmit={submit} class="stack">
      <label>
        Private key
        <input type="password" autoComplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} placeholder="vg_sk_…" />
      </label>
      <ErrorBox error={error} />
      <button class="primary" disabled={busy}>
        Sign in with the key
      </button>
    </form>
  );
}

function SupabaseForm() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [sent, setSent] = useState(false);
  const [busy, setBusy] = useState(false);
  const run = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      class="stack"
      onSubmit={(e) => {
        e.preventDefault();
        void run(async () => {
          await supabaseSignIn(email, password);
          navigate('/assistants');
        });
      }}
    >
      <label>
        Email
        <input type="email" autoComplete="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
      </label>
      <label>
        Password
        <input type="password" autoComplete="current-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
      </label>
      <ErrorBox error={error} />
      {sent && <p role="status">Check your email for a sign-in link.</p>}
      <div class="row">
        <button class="primary" disabled={busy || !password}>
          Sign in
        </button>
        <button
          type="button"
          disabled={busy || !email}
          onClick={() =>
            run(async () => {
              await supabaseMagicLink(email);
              setSent(true);
            })
          }
        >
          Email me a link
        </button>
      </div>
    </form>
  );
}

export function SignIn({ message }: { message?: string }) {
  return (
    <section class="narrow">
      <h1>Sign in to voxgate</h1>
      {message && <ErrorBox error={new Error(message)} />}
      {supabaseConfigured() && (
        <>
          <h2>With your account</h2>
          <SupabaseForm />
          <h2>Or with a key</h2>
        </>
      )}
      <p class="muted">
        On first start, <code>voxgate serve</code> prints a one-time link that signs you in. Or paste a private key (
        <code>voxgate keys create --name admin</code>).
      </p>
      <KeyForm />
    </section>
  );
}
