// The protocol client against a real WebSocket server (`ws`) on a free port: each
// test scripts what the server says, including malformed messages and close codes.
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { AgentClient, type CloseInfo, type SocketLike } from '../src/protocol/client';
import { parseServerEvent, type ServerEvent } from '../src/protocol/events';

type Script = (sock: WebSocket, start: Record<string, unknown>) => void;

let server: WebSocketServer | null = null;
const received: { text: string[]; binary: Buffer[] } = { text: [], binary: [] };

async function serve(script: Script, opts: { onText?: (sock: WebSocket, msg: Record<string, unknown>) => void } = {}): Promise<string> {
  received.text = [];
  received.binary = [];
  server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  server.on('connection', (sock) => {
    let started = false;
    sock.on('message', (data: RawData, isBinary: boolean) => {
      if (isBinary) {
        received.binary.push(Buffer.from(data as Buffer));
        return;
      }
      const text = data.toString();
      received.text.push(text);
      const msg = JSON.parse(text);
      if (!started && msg.type === 'start') {
        started = true;
        script(sock, msg);
      } else {
        opts.onText?.(sock, msg);
      }
    });
  });
  await new Promise<void>((r) => server!.once('listening', () => r()));
  const addr = server.address() as { port: number };
  return `ws://127.0.0.1:${addr.port}/agent?token=vg_ct_test`;
}

afterEach(async () => {
  for (const c of server?.clients ?? []) c.terminate();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

const factory = (url: string) => new WebSocket(url) as unknown as SocketLike;

function callStarted(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    type: 'call-started',
    callId: '01JCALL',
    assistantId: '01JASSIST',
    protocol: 'voxgate.v1',
    input: { encoding: 'pcm16', sampleRate: 16000 },
    output: { encoding: 'pcm16', sampleRate: 24000 },
    ...extra,
  });
}

function collect(client: AgentClient) {
  const events: ServerEvent[] = [];
  const audio: Int16Array[] = [];
  const malformed: string[] = [];
  const closed = new Promise<CloseInfo>((r) => client.on('close', r));
  client.on('event', (e) => events.push(e));
  client.on('audio', (a) => audio.push(a));
  client.on('malformed', (m) => malformed.push(m));
  return { events, audio, malformed, closed };
}

describe('protocol client', () => {
  it('sends start, resolves on call-started, streams audio both ways and ends with 1000', async () => {
    const url = await serve(
      (sock) => {
        sock.send(callStarted());
        const reply = Buffer.alloc(960);
        reply.writeInt16LE(1234, 0);
        reply.writeInt16LE(-2, 2);
        sock.send(JSON.stringify({ type: 'bot-speech-started' }));
        sock.send(reply, { binary: true });
        sock.send(JSON.stringify({ type: 'transcript', role: 'user', text: 'what is the', final: false }));
        sock.send(JSON.stringify({ type: 'latency', turn: 1, endpointingMs: 500, sttMs: 120.5, voiceToVoiceMs: 1040 }));
      },
      {
        onText: (sock, msg) => {
          if (msg.type === 'end') {
            sock.send(JSON.stringify({ type: 'call-ended', reason: 'customer-ended-call' }));
            sock.close(1000, 'customer-ended-call');
          }
        },
      },
    );
    const client = new AgentClient(factory);
    const got = collect(client);
    const started = await client.connect(url, { sampleRate: 16000, outputSampleRate: 24000 });
    expect(started.callId).toBe('01JCALL');
    expect(JSON.parse(received.text[0])).toEqual({ type: 'start', audio: { encoding: 'pcm16', sampleRate: 16000, outputSampleRate: 24000 } });

    const frame = new ArrayBuffer(640);
    new DataView(frame).setInt16(0, -300, true);
    expect(client.sendAudio(frame)).toBe(true);
    expect(client.sendText('  hello there ')).toBe(true);

    await expect.poll(() => got.events.some((e) => e.type === 'latency')).toBe(true);
    await expect.poll(() => got.audio.length).toBe(1);
    expect(got.audio[0].length).toBe(480);
    expect(got.audio[0][0]).toBe(1234);
    expect(got.audio[0][1]).toBe(-2);
    const latency = got.events.find((e) => e.type === 'latency');
    expect(latency).toMatchObject({ turn: 1, endpointingMs: 500, sttMs: 120.5, voiceToVoiceMs: 1040 });
    expect(got.events.find((e) => e.type === 'transcript')).toEqual({ type: 'transcript', role: 'user', text: 'what is the', final: false });

    await expect.poll(() => received.binary.length).toBe(1);
    expect(received.binary[0].length).toBe(640);
    expect(received.binary[0].readInt16LE(0)).toBe(-300);
    await expect.poll(() => received.text.length).toBe(2);
    expect(JSON.parse(received.text[1])).toEqual({ type: 'text', text: 'hello there' });

    client.end();
    const info = await got.closed;
    expect(info).toMatchObject({ code: 1000, endedReason: 'customer-ended-call', normal: true });
    expect(info.message).toBe('You ended the call.');
    expect(got.malformed).toEqual([]);
  });

  it('survives malformed server messages and keeps the call', async () => {
    const url = await serve((sock) => {
      // Audio before call-started, then garbage of every kind, then a good event.
      sock.send(Buffer.alloc(4), { binary: true });
      sock.send(callStarted());
      for (const bad of [
        'not json',
        '{"type":',
        '42',
        'null',
        '[]',
        '{"no":"type"}',
        '{"type":7}',
        '{"type":"transcript","role":"robot","text":"x"}',
        '{"type":"transcript","role":"user","text":5}',
        '{"type":"transcript","role":"user","text":"x","final":"yes"}',
        '{"type":"latency","sttMs":"fast"}',
        '{"type":"latency","sttMs":-4}',
        '{"type":"error"}',
        '{"type":"call-ended"}',
        callStarted(),
      ]) {
        sock.send(bad);
      }
      sock.send(Buffer.from([1, 0, 2]), { binary: true }); // odd byte count: one sample kept
      sock.send(JSON.stringify({ type: 'some-future-event', x: 1 }));
      sock.send(JSON.stringify({ type: 'transcript', role: 'assistant', text: 'Paris.', final: true, extra: 'ignored' }));
    });
    const client = new AgentClient(factory);
    const got = collect(client);
    await client.connect(url, { sampleRate: 16000 });
    await expect.poll(() => got.events.some((e) => e.type === 'transcript')).toBe(true);
    // 1 audio before start + 15 malformed texts + 1 odd byte count.
    expect(client.malformedCount).toBe(17);
    expect(got.malformed).toContain('not JSON');
    expect(got.malformed).toContain('audio before call-started');
    expect(got.audio).toHaveLength(1);
    expect(Array.from(got.audio[0])).toEqual([1]);
    expect(got.events).toContainEqual({ type: 'unknown', rawType: 'some-future-event' });
    expect(got.events).toContainEqual({ type: 'transcript', role: 'assistant', text: 'Paris.', final: true });
    expect(client.isOpen).toBe(true);
    client.close();
    const info = await got.closed;
    expect(info.code).toBe(1000);
  });

  it('a listener that throws does not stop the others', async () => {
    const url = await serve((sock) => {
      sock.send(callStarted());
      sock.send(JSON.stringify({ type: 'speech-started' }));
    });
    const client = new AgentClient(factory);
    const seen: string[] = [];
    const origError = console.error;
    console.error = () => {};
    try {
      client.on('event', () => {
        throw new Error('boom');
      });
      client.on('event', (e) => seen.push(e.type));
      await client.connect(url, { sampleRate: 16000 });
      await expect.poll(() => seen).toEqual(['call-started', 'speech-started']);
    } finally {
      console.error = origError;
      client.close();
    }
  });

  it('rejects connect with plain words when the server refuses the format (4001)', async () => {
    const url = await serve((sock) => {
      sock.send(JSON.stringify({ type: 'error', code: 'unsupported-audio-format', message: 'rate 11025 is not supported' }));
      sock.close(4001, 'rate 11025 is not supported');
    });
    const client = new AgentClient(factory);
    const got = collect(client);
    await expect(client.connect(url, { sampleRate: 11025 })).rejects.toThrow('The server does not support this audio format.');
    const info = await got.closed;
    expect(info).toMatchObject({ code: 4001, normal: false, reason: 'rate 11025 is not supported' });
    expect(got.events).toContainEqual({ type: 'error', code: 'unsupported-audio-format', message: 'rate 11025 is not supported' });
  });

  for (const [code, reason, words] of [
    [1011, 'internal error', 'The server failed during the call.'],
    [1012, 'server-shutdown', 'The server is restarting; start the call again.'],
    [1008, 'key-revoked', 'The key this call used was revoked.'],
    [4003, 'slow-client', 'This browser stopped reading audio in time, so the server ended the call.'],
    [1007, 'bad-message: unknown field', 'The server refused a message from this page (bad-message: unknown field).'],
  ] as const) {
    it(`reports close ${code} mid-call in plain words`, async () => {
      const url = await serve((sock) => {
        sock.send(callStarted());
        setTimeout(() => sock.close(code, reason), 20);
      });
      const client = new AgentClient(factory);
      const got = collect(client);
      await client.connect(url, { sampleRate: 16000 });
      const info = await got.closed;
      expect(info.code).toBe(code);
      expect(info.normal).toBe(false);
      expect(info.message).toBe(words);
      expect(client.isOpen).toBe(false);
      expect(client.sendAudio(new ArrayBuffer(640))).toBe(false);
    });
  }

  it('reports a dropped connection (no close frame) as lost', async () => {
    const url = await serve((sock) => {
      sock.send(callStarted());
      setTimeout(() => sock.terminate(), 20);
    });
    const client = new AgentClient(factory);
    const got = collect(client);
    await client.connect(url, { sampleRate: 16000 });
    const info = await got.closed;
    expect(info.code).toBe(1006);
    expect(info.message).toBe('The connection to the server was lost.');
  });

  it('takes call-ended as the word on how the call ended when the socket then drops', async () => {
    const url = await serve(
      (sock) => sock.send(callStarted()),
      {
        onText: (sock, msg) => {
          if (msg.type === 'end') {
            sock.send(JSON.stringify({ type: 'call-ended', reason: 'customer-ended-call' }), () => setTimeout(() => sock.terminate(), 20));
          }
        },
      },
    );
    const client = new AgentClient(factory);
    const got = collect(client);
    await client.connect(url, { sampleRate: 16000 });
    client.end();
    const info = await got.closed;
    expect(info).toMatchObject({ code: 1006, endedReason: 'customer-ended-call', normal: true, message: 'You ended the call.' });
  });

  it('rejects connect when nothing listens', async () => {
    const url = await serve(() => {});
    await new Promise<void>((r) => server!.close(() => r()));
    server = null;
    const client = new AgentClient(factory);
    await expect(client.connect(url, { sampleRate: 16000 })).rejects.toThrow(/lost/);
  });
});

describe('event parser', () => {
  it('never throws, whatever arrives', () => {
    const inputs = ['', '{', '"str"', 'true', '{"type":null}', '{"type":"latency","turn":"x"}', '\u0000', '{"type":"call-started"}'];
    for (const s of inputs) expect(() => parseServerEvent(s)).not.toThrow();
    expect(parseServerEvent('{"type":"call-started"}').ok).toBe(false);
    // A latency `turn` of the wrong type is dropped, the stages kept.
    expect(parseServerEvent('{"type":"latency","turn":"x","sttMs":3}')).toEqual({ ok: true, event: { type: 'latency', sttMs: 3 } });
  });
});
