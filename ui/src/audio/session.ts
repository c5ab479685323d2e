// A browser call: the microphone (echo cancellation and noise suppression on)
// through the capture worklet to the WebSocket, and the reply from the WebSocket
// through the player worklet to the speakers. The page sees events and levels.

import workletUrl from './worklet.ts?worker&url';
import { AgentClient, type CloseInfo } from '../protocol/client';
import type { ServerEvent } from '../protocol/events';

/** The rates the server accepts (docs/agent-protocol.md). */
const RATES = [8000, 16000, 24000, 48000];
/** What the microphone is sent at: the pipeline's own rate, so nothing is resampled twice. */
export const INPUT_RATE = 16000;

export interface SessionHandlers {
  onEvent(ev: ServerEvent): void;
  onClose(info: CloseInfo): void;
  onLevel(who: 'mic' | 'bot', level: number): void;
  onMalformed?(reason: string): void;
}

export class TalkSession {
  private ctx: AudioContext | null = null;
  private stream: MediaStream | null = null;
  private capture: AudioWorkletNode | null = null;
  private player: AudioWorkletNode | null = null;
  readonly client = new AgentClient();
  private muted = false;
  private ending = false;
  /** Bytes of caller audio sent, for the page (and tests) to see audio flows. */
  sentBytes = 0;

  constructor(private readonly h: SessionHandlers) {}

  /** Opens the microphone and the call. Call from a click, so audio may start. */
  async start(agentUrl: string): Promise<string> {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error('This browser cannot use the microphone here (it needs https, or localhost).');
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (e) {
      const name = (e as DOMException)?.name;
      throw new Error(
        name === 'NotAllowedError'
          ? 'Microphone access was refused. Allow it in the browser and try again.'
          : name === 'NotFoundError'
            ? 'No microphone was found.'
            : `The microphone could not be opened (${(e as Error).message}).`,
      );
    }
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    await this.ctx.resume();
    try {
      await this.ctx.audioWorklet.addModule(workletUrl);
    } catch (e) {
      throw new Error(`The audio processor could not load (${(e as Error).message}).`);
    }
    const outputRate = RATES.includes(this.ctx.sampleRate) ? this.ctx.sampleRate : 24000;

    this.player = new AudioWorkletNode(this.ctx, 'vg-player', {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { rate: outputRate },
    });
    this.player.connect(this.ctx.destination);
    this.player.port.onmessage = (e) => e.data?.type === 'level' && this.h.onLevel('bot', e.data.level);

    this.client.on('event', (ev) => {
      if (ev.type === 'interruption') this.player?.port.postMessage({ type: 'flush' });
      this.h.onEvent(ev);
    });
    this.client.on('audio', (pcm) => this.player?.port.postMessage({ type: 'audio', pcm }, [pcm.buffer]));
    this.client.on('close', (info) => {
      this.stopAudio();
      this.h.onClose(info);
    });
    if (this.h.onMalformed) this.client.on('malformed', this.h.onMalformed);

    const started = await this.client.connect(agentUrl, { sampleRate: INPUT_RATE, outputSampleRate: outputRate });

    const source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, 'vg-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: 'explicit',
      processorOptions: { rate: INPUT_RATE },
    });
    this.capture.port.onmessage = (e) => {
      const d = e.data;
      if (d?.type === 'frame' && d.bytes instanceof ArrayBuffer && !this.ending) {
        if (this.client.sendAudio(d.bytes)) this.sentBytes += d.bytes.byteLength;
      } else if (d?.type === 'level') this.h.onLevel('mic', d.level);
    };
    source.connect(this.capture);
    return started.callId;
  }

  setMuted(muted: boolean): void {
    this.muted = muted;
    this.capture?.port.postMessage({ type: 'mute', muted });
    this.client.mute(muted);
  }

  get isMuted(): boolean {
    return this.muted;
  }

  sendText(text: string): boolean {
    return this.client.sendText(text);
  }

  /**
   * Hangs up; the close event follows. The microphone stops first: audio still in
   * flight when the server closes the socket can make the close arrive as a reset
   * (1006) instead of the close frame.
   */
  end(): void {
    this.ending = true;
    this.capture?.disconnect();
    this.client.end();
  }

  /** Releases the microphone and the audio context (idempotent). */
  stopAudio(): void {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.capture?.disconnect();
    this.player?.disconnect();
    this.capture = this.player = null;
    if (this.ctx && this.ctx.state !== 'closed') void this.ctx.close();
    this.ctx = null;
  }

  /** Leaves the page: hang up and release everything. */
  dispose(): void {
    if (this.client.isOpen) this.client.close();
    this.stopAudio();
  }
}
