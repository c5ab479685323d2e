// The assistants: a list with Talk, Edit and Delete.

import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import type { Assistant } from '../types';
import { ErrorBox, Link, Loading } from '../components/ui';
import { navigate } from '../router';
import { fmtTime } from '../stats';

export function Assistants() {
  const [items, setItems] = useState<Assistant[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);

  const load = async (after?: string) => {
    try {
      const page = await api.assistants(after);
      setItems((prev) => (after && prev ? [...prev, ...page.items] : page.items));
      setCursor(page.nextCursor);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    void load();
  }, []);

  const remove = async (a: Assistant) => {
    if (!confirm(`Delete the assistant “${a.name}”? Its calls stay in the call list.`)) return;
    try {
      await api.deleteAssistant(a.id);
      setItems((prev) => prev?.filter((x) => x.id !== a.id) ?? null);
    } catch (e) {
      setError(e);
    }
  };

  return (
    <section>
      <div class="title-row">
        <h1>Assistants</h1>
        <Link href="/assistants/new" class="button primary">
          New assistant
        </Link>
      </div>
      <ErrorBox error={error} />
      {items === null && !error && <Loading what="assistants" />}
      {items?.length === 0 && <p>No assistant yet. Create one to talk to it.</p>}
      {items && items.length > 0 && (
        <ul class="cards" aria-label="Assistants">
          {items.map((a) => (
            <li class="card" key={a.id} data-testid="assistant-card">
              <div>
                <h2>
                  <Link href={`/assistants/${a.id}`}>{a.name}</Link>
                </h2>
                <p class="muted small">
                  {a.transcriber.provider} / {a.model.provider}
                  {a.model.model ? ` ${a.model.model}` : ''} / {a.voice.provider} · updated {fmtTime(a.updatedAt)}
                </p>
                {a.firstMessage && <p class="clip">“{a.firstMessage}”</p>}
              </div>
              <div class="row">
                <button class="primary" onClick={() => navigate(`/talk/${a.id}`)}>
                  Talk
                </button>
                <Link href={`/assistants/${a.id}`} class="button">
                  Edit
                </Link>
                <Link href={`/calls?assistantId=${a.id}`} class="button">
                  Calls
                </Link>
                <button class="danger" onClick={() => remove(a)} aria-label={`Delete ${a.name}`}>
                  Delete
                </button>
              </div>
            </li>
          ))}
        </ul>
      )}
      {cursor && <button onClick={() => load(cursor)}>Load more</button>}
    </section>
  );
}
