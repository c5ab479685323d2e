// Small shared pieces: an error box in plain words, a loading line, a level meter,
// a link that navigates in the app.

import type { ComponentChildren } from 'preact';
import { onLinkClick } from '../router';
import { ApiError } from '../api';

export function Link(props: { href: string; class?: string; children: ComponentChildren; 'aria-current'?: 'page' | undefined }) {
  return (
    <a href={props.href} class={props.class} onClick={onLinkClick} aria-current={props['aria-current']}>
      {props.children}
    </a>
  );
}

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const message = error instanceof Error ? error.message : String(error);
  const fields = error instanceof ApiError ? error.fields : [];
  return (
    <div class="error" role="alert">
      <strong>{message}</strong>
      {fields.length > 0 && (
        <ul>
          {fields.map((f) => (
            <li key={f.field}>
              <code>{f.field || 'body'}</code>: {f.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" role="status">
      Loading {what}…
    </p>
  );
}

/** A level meter (0 to 1 RMS, shown on a log scale so speech moves it). */
export function Meter({ level, label }: { level: number; label: string }) {
  const db = level > 0 ? 20 * Math.log10(level) : -100;
  const pct = Math.max(0, Math.min(100, ((db + 60) / 60) * 100));
  return (
    <div class="meter" role="meter" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(pct)}>
      <div class="meter-fill" style={{ width: `${pct}%` }} />
    </div>
  );
}
