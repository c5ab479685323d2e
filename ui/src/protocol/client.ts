// The `/agent` client: one WebSocket per call. It sends `start`, then audio as
// binary messages; it hands parsed events and reply audio to its listeners. Malformed
// server messages are counted and reported, never thrown; a listener that throws
// does not stop the others or the call.

import { describeClose, parseServerEvent, type ServerEvent } from './events';

/** The part of the WebSocket interface the client uses (browsers' and `ws`'s both fit). */
export interface SocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = (url: string) => SocketLike;

export interface StartOptions {
  sampleRate: number;
  outputSampleRate?: number;
  encoding?: 'pcm16';
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** From `call-ended`, when the server sent one. */
  endedReason?: string;
  /** Plain words for the person on the call. */
  message: string;
  /** The call ended as calls do (code 1000), not by a failure. */
  normal: boolean;
}

type Listeners = {
  event: (ev: ServerEvent) => void;
  audio: (pcm: Int16Array) => void;
  close: (info: CloseInfo) => void;
  malformed: (reason: string) => void;
};

const OPEN = 1;

/** `call-ended` reasons that are how calls end, not failures. */
const NORMAL_ENDS = new Set([
  'customer-ended-call',
  'assistant-ended-call',
  'silence-timed-out',
  'exceeded-max-duration',
  'assistant-said-end-call-phrase',
  'assistant-ended-call-with-tool',
]);

export class AgentClient {
  private socket: SocketLike | null = null;
  private listeners: { [K in keyof Listeners]: Set<Listeners[K]> } = {
    event: new Set(),
    audio: new Set(),
    close: new Set(),
    malformed: new Set(),
  };
  private endedReason: string | undefined;
  private started = false;
  private closed = false;
  private pingId = 0;
  /** Server messages refused as malformed. */
  malformedCount = 0;
  callId: string | undefined;

  constructor(private readonly factory: SocketFactory = (url) => new WebSocket(url) as unknown as SocketLike) {}

  on<K extends keyof Listeners>(kind: K, fn: Listeners[K]): () => void {
    this.listeners[kind].add(fn);
    return () => this.listeners[kind].delete(fn);
  }

  get isOpen(): boolean {
    return this.socket !== null && this.socket.readyState === OPEN && !this.closed;
  }

  /**
   * Opens the call and sends `start`; resolves with `call-started`, or rejects with
   * the close's plain-words message if the call closes first.
   */
  connect(url: string, start: StartOptions): Promise<Extract<ServerEvent, { type: 'call-started' }>> {
    if (this.socket) throw new Error('this client is already connected');
    return new Promise((resolve, reject) => {
      let ws: SocketLike;
      try {
        ws = this.factory(url);
      } catch (e) {
        reject(new Error(`Could not open the call: ${(e as Error).message}`));
        return;
      }
      this.socket = ws;
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        const audio: Record<string, unknown> = { encoding: start.encoding ?? 'pcm16', sampleRate: start.sampleRate };
        if (start.outputSampleRate) audio.outputSampleRate = start.outputSampleRate;
        ws.send(JSON.stringify({ type: 'start', audio }));
      };
      ws.onmessage = (msg) => this.receive(msg.data, resolve);
      ws.onerror = () => {
        /* the close event that follows carries what we can know */
      };
      ws.onclose = (ev) => {
        this.closed = true;
        const info: CloseInfo = {
          code: ev.code,
          reason: ev.reason ?? '',
          endedReason: this.endedReason,
          message: describeClose(ev.code, ev.reason ?? '', this.endedReason),
          // `call-ended` is the server's word on how the call ended, even when the
          // socket then closed without its close frame (1006).
          normal: ev.code === 1000 || (ev.code === 1006 && this.endedReason !== undefined && NORMAL_ENDS.has(this.endedReason)),
        };
        if (!this.started) reject(new Error(info.message));
        this.emit('close', info);
      };
    });
  }

  private receive(data: unknown, resolveStart: (ev: Extract<ServerEvent, { type: 'call-started' }>) => void): void {
    if (typeof data === 'string') {
      const parsed = parseServerEvent(data);
      if (!parsed.ok) {
        this.malformedCount++;
        this.emit('malformed', parsed.reason);
        return;
      }
      const ev = parsed.event;
      if (ev.type === 'call-started') {
        if (this.started) {
          this.malformedCount++;
          this.emit('malformed', 'a second call-started');
          return;
        }
        this.started = true;
        this.callId = ev.callId;
        resolveStart(ev);
      } else if (ev.type === 'call-ended') {
        this.endedReason = ev.reason;
      }
      this.emit('event', ev);
      return;
    }
    let bytes: ArrayBuffer | null = null;
    if (data instanceof ArrayBuffer) bytes = data;
    else if (ArrayBuffer.isView(data)) {
      bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer;
    }
    if (bytes === null) {
      this.malformedCount++;
      this.emit('malformed', 'a message that is neither text nor binary');
      return;
    }
    if (!this.started) {
      this.malformedCount++;
      this.emit('malformed', 'audio before call-started');
      return;
    }
    // PCM16 little-endian; an odd trailing byte cannot be a sample and is dropped.
    const n = bytes.byteLength >> 1;
    const view = new DataView(bytes);
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++) pcm[i] = view.getInt16(i * 2, true);
    if (bytes.byteLength % 2 !== 0) {
      this.malformedCount++;
      this.emit('malformed', 'audio with an odd number of bytes');
    }
    if (n > 0) this.emit('audio', pcm);
  }

  private emit<K extends keyof Listeners>(kind: K, arg: Parameters<Listeners[K]>[0]): void {
    for (const fn of this.listeners[kind]) {
      try {
        (fn as (a: typeof arg) => void)(arg);
      } catch (e) {
        console.error(`voxgate: a ${kind} listener failed`, e);
      }
    }
  }

  /** Sends caller audio (PCM16 little-endian bytes); dropped when the call is not live. */
  sendAudio(bytes: ArrayBuffer): boolean {
    if (!this.started || !this.isOpen) return false;
    this.socket!.send(bytes);
    return true;
  }

  private sendJson(msg: Record<string, unknown>): boolean {
    if (!this.isOpen) return false;
    this.socket!.send(JSON.stringify(msg));
    return true;
  }

  /** Typed text instead of speech: a user turn. */
  sendText(text: string): boolean {
    const t = text.trim();
    if (!t || !this.started) return false;
    return this.sendJson({ type: 'text', text: t.slice(0, 4000) });
  }

  mute(muted: boolean): boolean {
    return this.sendJson({ type: muted ? 'mute' : 'unmute' });
  }

  ping(): number {
    const id = ++this.pingId;
    this.sendJson({ type: 'ping', id });
    return id;
  }

  /** Hangs up: the server answers `call-ended` and closes with 1000. */
  end(): void {
    if (!this.sendJson({ type: 'end' })) this.close();
  }

  /** Closes the socket from this side (the server records `customer-ended-call`). */
  close(): void {
    if (this.socket && !this.closed) {
      try {
        this.socket.close(1000, 'customer-ended-call');
      } catch {
        /* already closing */
      }
    }
  }
}
