// The talk page: a call to one assistant from this browser. It shows the live
// transcript (partial and final), who is speaking, the levels, each turn's latency
// as it arrives, and takes typed text as well as speech.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api';
import { config } from '../config';
import type { Assistant } from '../types';
import type { Latency, ServerEvent } from '../protocol/events';
import type { CloseInfo } from '../protocol/client';
import { TalkSession } from '../audio/session';
import { ErrorBox, Link, Loading, Meter } from '../components/ui';
import { LatencyChart } from '../components/LatencyChart';
import { fmtMs } from '../stats';

interface Line {
  role: 'user' | 'assistant' | 'note';
  text: string;
  final: boolean;
}

type Phase = 'idle' | 'connecting' | 'live' | 'ended';

/** The agent URL for a call token: the configured agent endpoint with `?token=`. */
export function agentUrlFor(agentBase: string, token: string): string {
  const u = new URL(agentBase, window.location.href);
  u.search = '';
  u.searchParams.set('token', token);
  return u.toString();
}

export function Talk({ id }: { id: string }) {
  const [assistant, setAssistant] = useState<Assistant | null>(null);
  const [phase, setPhase] = useState<Phase>('idle');
  const [error, setError] = useState<unknown>(null);
  const [lines, setLines] = useState<Line[]>([]);
  const [latencies, setLatencies] = useState<Latency[]>([]);
  const [userSpeaking, setUserSpeaking] = useState(false);
  const [botSpeaking, setBotSpeaking] = useState(false);
  const [levels, setLevels] = useState({ mic: 0, bot: 0 });
  const [callId, setCallId] = useState<string | null>(null);
  const [closeInfo, setCloseInfo] = useState<CloseInfo | null>(null);
  const [muted, setMuted] = useState(false);
  const [typed, setTyped] = useState('');
  const [notice, setNotice] = useState<string | null>(null);
  const session = useRef<TalkSession | null>(null);
  const transcriptEnd = useRef<HTMLLIElement>(null);

  useEffect(() => {
    api.assistant(id).then(setAssistant).catch(setError);
    return () => session.current?.dispose();
  }, [id]);

  useEffect(() => {
    transcriptEnd.current?.scrollIntoView({ block: 'nearest' });
  }, [lines]);

  const onEvent = (ev: ServerEvent) => {
    switch (ev.type) {
      case 'speech-started':
        setUserSpeaking(true);
        break;
      case 'speech-stopped':
        setUserSpeaking(false);
        break;
      case 'bot-speech-started':
        setBotSpeaking(true);
        break;
      case 'bot-speech-stopped':
        setBotSpeaking(false);
        break;
      case 'interruption':
        setBotSpeaking(false);
        setLines((ls) => [...ls, { role: 'note', text: 'You interrupted the assistant.', final: true }]);
        break;
      case 'transcript':
        setLines((ls) => {
          const last = ls[ls.length - 1];
          const line = { role: ev.role, text: ev.text, final: ev.final };
          // A partial replaces the caller's previous partial; the final replaces it too.
          if (ev.role === 'user' && last && last.role === 'user' && !last.final) return [...ls.slice(0, -1), line];
          return [...ls, line];
        });
        break;
      case 'latency':
        setLatencies((ls) => [...ls, ev]);
        break;
      case 'tool-call':
        setLines((ls) => [...ls, { role: 'note', text: `The assistant called the tool ${ev.name}.`, final: true }]);
        break;
      case 'error':
        setNotice(ev.message);
        break;
      default:
        break;
    }
  };

  const start = async () => {
    setError(null);
    setNotice(null);
    setCloseInfo(null);
    setLines([]);
    setLatencies([]);
    setPhase('connecting');
    const s = new TalkSession({
      onEvent,
      onClose: (info) => {
        // A call that never started is reported once, by start()'s error.
        if (s.client.callId) setCloseInfo(info);
        setPhase('ended');
        setUserSpeaking(false);
        setBotSpeaking(false);
        setLevels({ mic: 0, bot: 0 });
      },
      onLevel: (who, level) => setLevels((l) => ({ ...l, [who]: level })),
    });
    session.current = s;
    try {
      const token = await api.callToken(id);
      const cid = await s.start(agentUrlFor(config().agentUrl, token.token));
      setCallId(cid);
      setPhase('live');
    } catch (e) {
      s.dispose();
      setError(e);
      setPhase('idle');
    }
  };

  const end = () => session.current?.end();

  const sendTyped = (e: Event) => {
    e.preventDefault();
    if (session.current?.sendText(typed)) {
      setLines((ls) => [...ls, { role: 'user', text: typed.trim(), final: true }]);
      setTyped('');
    }
  };

  if (!assistant) return error ? <ErrorBox error={error} /> : <Loading what="the assistant" />;

  const live = phase === 'live';
  return (
    <section class="talk">
      <div class="title-row">
        <h1>Talk to {assistant.name}</h1>
        <Link href={`/assistants/${assistant.id}`} class="button">
          Edit
        </Link>
      </div>

      <div class="talk-controls row">
        {phase === 'idle' || phase === 'ended' ? (
          <button class="primary big" onClick={start} data-testid="start-call">
            {phase === 'ended' ? 'Call again' : 'Start call'}
          </button>
        ) : (
          <button class="danger big" onClick={end} disabled={phase !== 'live'} data-testid="end-call">
            End call
          </button>
        )}
        {live && (
          <button
            aria-pressed={muted}
            onClick={() => {
              session.current?.setMuted(!muted);
              setMuted(!muted);
            }}
          >
            {muted ? 'Unmute' : 'Mute'}
          </button>
        )}
        <span class="muted" role="status" data-testid="call-phase">
          {phase === 'connecting' ? 'Connecting…' : phase === 'live' ? 'Live' : phase === 'ended' ? 'Ended' : 'Not started'}
        </span>
      </div>

      <ErrorBox error={error} />
      {notice && (
        <p class="warn" role="status">
          {notice}
        </p>
      )}

      <div class="speakers" aria-live="polite">
        <div class={`speaker ${userSpeaking ? 'on' : ''}`} data-testid="you-indicator">
          <span class="dot" aria-hidden="true" /> You {userSpeaking ? 'are speaking' : ''}
          <Meter level={levels.mic} label="Your microphone level" />
        </div>
        <div class={`speaker ${botSpeaking ? 'on' : ''}`} data-testid="bot-indicator">
          <span class="dot" aria-hidden="true" /> {assistant.name} {botSpeaking ? 'is speaking' : ''}
          <Meter level={levels.bot} label="The assistant's level" />
        </div>
      </div>

      <h2>Transcript</h2>
      <ol class="transcript" aria-live="polite" data-testid="transcript">
        {lines.length === 0 && <li class="muted">{live ? 'Say something, or type below.' : 'The transcript appears here.'}</li>}
        {lines.map((l, i) => (
          <li key={i} class={`line ${l.role} ${l.final ? '' : 'partial'}`} data-role={l.role}>
            <span class="who">{l.role === 'user' ? 'You' : l.role === 'assistant' ? assistant.name : ''}</span> {l.text}
            {!l.final && <span class="sr-only"> (still listening)</span>}
          </li>
        ))}
        <li ref={transcriptEnd} aria-hidden="true" class="anchor" />
      </ol>

      <form class="row" onSubmit={sendTyped}>
        <label class="sr-only" for="typed">
          Type a message
        </label>
        <input id="typed" class="grow" value={typed} disabled={!live} placeholder="Type instead of speaking" maxLength={4000}
          onInput={(e) => setTyped(e.currentTarget.value)} />
        <button disabled={!live || !typed.trim()}>Send</button>
      </form>

      <h2>Latency</h2>
      <div data-testid="live-latency">
        {latencies.length > 0 && (
          <p class="muted">
            Last turn: voice to voice {fmtMs(latencies[latencies.length - 1].voiceToVoiceMs)}, response{' '}
            {fmtMs(latencies[latencies.length - 1].responseMs)}
          </p>
        )}
        <LatencyChart turns={latencies.map((l, i) => ({ label: `#${l.turn ?? i + 1}`, latency: l }))} title="Latency per turn (this call)" />
      </div>

      {closeInfo && (
        <div class={closeInfo.normal ? 'ok' : 'error'} role="status" data-testid="call-ended" data-close-code={closeInfo.code}>
          <p>{closeInfo.message}</p>
          {callId && (
            <p>
              <Link href={`/calls/${callId}`}>See this call’s record</Link>
            </p>
          )}
        </div>
      )}
    </section>
  );
}
