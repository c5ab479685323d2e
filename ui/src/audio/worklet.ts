// The audio worklet module (a same-origin file, as the page's CSP requires):
// `vg-capture` resamples the microphone to the call's rate, encodes PCM16 and posts
// 20 ms frames; `vg-player` plays the reply through the jitter buffer, flushed at
// once on an interruption. Both post their level for the meters.

import { Framer, floatToPcm16, pcm16ToBytes, pcm16ToFloat, rms } from './pcm';
import { Resampler } from './resample';
import { JitterBuffer } from './jitter';

declare const sampleRate: number;
declare function registerProcessor(name: string, ctor: unknown): void;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: unknown);
}

interface Options {
  processorOptions?: { rate?: number };
}

const LEVEL_EVERY = 0.05; // seconds between level messages

class CaptureProcessor extends AudioWorkletProcessor {
  private resampler: Resampler;
  private framer: Framer;
  private muted = false;
  private peak = 0;
  private sinceLevel = 0;

  constructor(options: Options) {
    super(options);
    const rate = options.processorOptions?.rate ?? 16000;
    this.resampler = new Resampler(sampleRate, rate);
    this.framer = new Framer(Math.round(rate / 50));
    this.port.onmessage = (e: MessageEvent) => {
      if (e.data?.type === 'mute') this.muted = Boolean(e.data.muted);
    };
  }

  process(inputs: Float32Array[][]): boolean {
    const ch = inputs[0]?.[0];
    if (!ch) return true;
    this.peak = Math.max(this.peak, rms(ch));
    this.sinceLevel += ch.length;
    if (this.sinceLevel >= sampleRate * LEVEL_EVERY) {
      this.port.postMessage({ type: 'level', level: this.muted ? 0 : this.peak });
      this.peak = 0;
      this.sinceLevel = 0;
    }
    if (this.muted) return true;
    for (const frame of this.framer.push(floatToPcm16(this.resampler.process(ch)))) {
      const bytes = pcm16ToBytes(frame);
      this.port.postMessage({ type: 'frame', bytes }, [bytes]);
    }
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  private resampler: Resampler;
  private jitter: JitterBuffer;
  private peak = 0;
  private sinceLevel = 0;

  constructor(options: Options) {
    super(options);
    const rate = options.processorOptions?.rate ?? 24000;
    this.resampler = new Resampler(rate, sampleRate);
    // 60 ms before playback starts; at most 5 s held (the server paces in real time).
    this.jitter = new JitterBuffer(Math.round(sampleRate * 0.06), sampleRate * 5);
    this.port.onmessage = (e: MessageEvent) => {
      const d = e.data;
      if (d?.type === 'audio' && d.pcm instanceof Int16Array) {
        this.jitter.push(this.resampler.process(pcm16ToFloat(d.pcm)));
      } else if (d?.type === 'flush') {
        this.jitter.flush();
      }
    };
  }

  process(_inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const out = outputs[0];
    if (!out || out.length === 0) return true;
    this.jitter.pull(out[0]);
    for (let c = 1; c < out.length; c++) out[c].set(out[0]);
    this.peak = Math.max(this.peak, rms(out[0]));
    this.sinceLevel += out[0].length;
    if (this.sinceLevel >= sampleRate * LEVEL_EVERY) {
      this.port.postMessage({ type: 'level', level: this.peak, buffered: this.jitter.buffered / sampleRate });
      this.peak = 0;
      this.sinceLevel = 0;
    }
    return true;
  }
}

registerProcessor('vg-capture', CaptureProcessor);
registerProcessor('vg-player', PlayerProcessor);
