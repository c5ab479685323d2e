// The app shell: loads the runtime configuration, restores the sign-in, and routes.
//
// # Layout
// - config.ts: `/config.json` and build-time settings
// - auth.ts, api.ts: sign-in and the API client (errors in plain words)
// - protocol/: the `/agent` client and its event parser
// - audio/: PCM16, the resampler, the jitter buffer, the worklets, a browser call
// - pages/: sign-in, assistants, talk, calls, live
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import './style.css';
import { loadConfig } from './config';
import { authState, onAuth, restore, signOut, type AuthState } from './auth';
import { match, useLocation } from './router';
import { Link } from './components/ui';
import { LoginLink, SignIn } from './pages/SignIn';
import { Assistants } from './pages/Assistants';
import { AssistantForm } from './pages/AssistantForm';
import { Talk } from './pages/Talk';
import { CallDetail, Calls } from './pages/Calls';
import { Live } from './pages/Live';

function Page({ path, query }: { path: string; query: URLSearchParams }) {
  let m: Record<string, string> | null;
  if (path === '/' || path === '/assistants') return <Assistants />;
  if (path === '/assistants/new') return <AssistantForm />;
  if ((m = match('/assistants/:id', path))) return <AssistantForm id={m.id} />;
  if ((m = match('/talk/:id', path))) return <Talk id={m.id} />;
  if (path === '/calls') return <Calls query={query} />;
  if ((m = match('/calls/:id', path))) return <CallDetail id={m.id} />;
  if (path === '/live') return <Live />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code>. <Link href="/assistants">Go to the assistants.</Link>
      </p>
    </section>
  );
}

const NAV = [
  { href: '/assistants', label: 'Assistants', prefixes: ['/assistants', '/talk'] },
  { href: '/calls', label: 'Calls', prefixes: ['/calls'] },
  { href: '/live', label: 'Live', prefixes: ['/live'] },
];

function App() {
  const [auth, setAuth] = useState<AuthState>(authState());
  const { path, query } = useLocation();
  useEffect(() => onAuth(setAuth), []);
  // After an in-app navigation, focus moves to the new page (as a page load would).
  const firstRender = useRef(true);
  useEffect(() => {
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    document.getElementById('main')?.focus();
  }, [path]);
  const signedIn = auth.kind !== 'signed-out';
  return (
    <>
      <a href="#main" class="skip">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand">
          voxgate
        </Link>
        {signedIn && path !== '/login' && (
          <nav aria-label="Main">
            {NAV.map((n) => {
              const here = n.prefixes.some((p) => path === p || path.startsWith(p + '/')) || (path === '/' && n.href === '/assistants');
              return (
                <Link key={n.href} href={n.href} aria-current={here ? 'page' : undefined}>
                  {n.label}
                </Link>
              );
            })}
            <button class="link" onClick={() => signOut()}>
              Sign out
            </button>
          </nav>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {path === '/login' ? <LoginLink /> : signedIn ? <Page path={path} query={query} /> : <SignIn message={auth.kind === 'signed-out' ? auth.message : undefined} />}
      </main>
    </>
  );
}

async function boot() {
  const root = document.getElementById('app')!;
  try {
    await loadConfig();
    await restore();
  } catch (e) {
    root.textContent = `The app could not start: ${(e as Error).message}`;
    return;
  }
  render(<App />, root);
}

void boot();
