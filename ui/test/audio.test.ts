import { describe, expect, it } from 'vitest';
import { Framer, bytesToPcm16, floatToPcm16, pcm16ToBytes, pcm16ToFloat, rms } from '../src/audio/pcm';
import { Resampler } from '../src/audio/resample';
import { JitterBuffer } from '../src/audio/jitter';

function sine(freq: number, rate: number, n: number, amp = 0.5): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * Math.sin((2 * Math.PI * freq * i) / rate);
  return out;
}

/** Amplitude of `freq` in `x` (Goertzel), normalised so a full-scale sine gives its amplitude. */
function toneAmplitude(x: ArrayLike<number>, freq: number, rate: number): number {
  const w = (2 * Math.PI * freq) / rate;
  let re = 0;
  let im = 0;
  for (let i = 0; i < x.length; i++) {
    re += x[i] * Math.cos(w * i);
    im -= x[i] * Math.sin(w * i);
  }
  return (2 * Math.hypot(re, im)) / x.length;
}

/** The strongest frequency in 10 Hz steps between lo and hi. */
function peakFrequency(x: ArrayLike<number>, rate: number, lo: number, hi: number): number {
  let best = lo;
  let bestAmp = -1;
  for (let f = lo; f <= hi; f += 10) {
    const a = toneAmplitude(x, f, rate);
    if (a > bestAmp) {
      bestAmp = a;
      best = f;
    }
  }
  return best;
}

/** Runs a resampler over `x` in blocks of `block` samples (as the worklet does, 128). */
function resampleInBlocks(r: Resampler, x: Float32Array, block: number): Float32Array {
  const parts: Float32Array[] = [];
  for (let i = 0; i < x.length; i += block) parts.push(r.process(x.subarray(i, i + block)));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe('PCM16 encoder', () => {
  it('encodes a known sine to known samples', () => {
    // A 1 kHz sine at 8 kHz: eight samples a period, at 0, 45, 90 ... degrees.
    const pcm = floatToPcm16(sine(1000, 8000, 8, 1));
    const s = Math.round(32767 * Math.SQRT1_2); // 23170
    expect(Array.from(pcm)).toEqual([0, s, 32767, s, 0, -s, -32767, -s]);
  });

  it('clips out-of-range input and turns NaN into silence', () => {
    expect(Array.from(floatToPcm16([1.5, -3, NaN, 0.5, -0.5]))).toEqual([32767, -32767, 0, 16384, -16384]);
  });

  it('writes little-endian bytes and reads them back', () => {
    const pcm = Int16Array.from([1, -2, 0x1234, -32768]);
    const bytes = new Uint8Array(pcm16ToBytes(pcm));
    expect(Array.from(bytes)).toEqual([1, 0, 0xfe, 0xff, 0x34, 0x12, 0x00, 0x80]);
    expect(Array.from(bytesToPcm16(bytes.buffer))).toEqual(Array.from(pcm));
    // An odd trailing byte is not a sample.
    expect(bytesToPcm16(new Uint8Array([1, 0, 9]).buffer).length).toBe(1);
  });

  it('round-trips float to PCM16 within one step', () => {
    const x = sine(440, 16000, 1600, 0.8);
    const back = pcm16ToFloat(floatToPcm16(x));
    for (let i = 0; i < x.length; i++) expect(Math.abs(back[i] - x[i])).toBeLessThan(2 / 32768);
    expect(rms(back)).toBeCloseTo(0.8 / Math.SQRT2, 3);
  });

  it('cuts a stream into whole 20 ms frames and keeps the rest', () => {
    const f = new Framer(320);
    expect(f.push(new Int16Array(100))).toHaveLength(0);
    const frames = f.push(Int16Array.from({ length: 600 }, (_, i) => i));
    expect(frames).toHaveLength(2);
    expect(frames[0]).toHaveLength(320);
    expect(frames[0][100]).toBe(0); // the first pushed sample after the 100 zeros
    expect(frames[1][0]).toBe(220);
    expect(f.push(new Int16Array(259))).toHaveLength(0);
    expect(f.push(new Int16Array(1))).toHaveLength(1);
  });
});

describe('resampler', () => {
  for (const [from, to] of [
    [44100, 16000],
    [48000, 16000],
    [16000, 48000],
    [24000, 44100],
  ]) {
    it(`keeps a tone's frequency and the length from ${from} to ${to} Hz`, () => {
      const seconds = 1;
      const x = sine(440, from, from * seconds);
      const y = resampleInBlocks(new Resampler(from, to), x, 128);
      // Length follows the ratio, short only by the filter's delay (a few ms).
      const expected = to * seconds;
      expect(y.length).toBeLessThanOrEqual(expected);
      expect(y.length).toBeGreaterThan(expected - to * 0.005);
      expect(peakFrequency(y.subarray(200, y.length - 200), to, 300, 600)).toBe(440);
      expect(toneAmplitude(y.subarray(200, y.length - 200), 440, to)).toBeCloseTo(0.5, 1);
    });
  }

  it('does not depend on the block size', () => {
    const x = sine(1234, 44100, 44100);
    const a = resampleInBlocks(new Resampler(44100, 16000), x, 128);
    const b = resampleInBlocks(new Resampler(44100, 16000), x, 1000);
    expect(a.length).toBe(b.length);
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 5);
  });

  it('removes a tone above the new Nyquist frequency instead of folding it into speech', () => {
    // 11 kHz at 44.1 kHz would alias to 5 kHz at 16 kHz without the low-pass.
    const y = resampleInBlocks(new Resampler(44100, 16000), sine(11000, 44100, 44100), 128);
    const alias = toneAmplitude(y.subarray(200), 5000, 16000);
    expect(alias).toBeLessThan(0.01);
    expect(rms(y.subarray(200))).toBeLessThan(0.01);
  });
});

describe('jitter buffer', () => {
  it('waits for the prebuffer, then plays in order', () => {
    const jb = new JitterBuffer(4, 100);
    const out = new Float32Array(3);
    jb.push(Float32Array.from([1, 2]));
    expect(jb.pull(out)).toBe(0);
    expect(Array.from(out)).toEqual([0, 0, 0]);
    jb.push(Float32Array.from([3, 4, 5]));
    expect(jb.pull(out)).toBe(3);
    expect(Array.from(out)).toEqual([1, 2, 3]);
    expect(jb.pull(out)).toBe(2);
    expect(Array.from(out)).toEqual([4, 5, 0]);
    expect(jb.isPlaying).toBe(false); // ran dry: prebuffers again
  });

  it('flushes everything at once on an interruption', () => {
    const jb = new JitterBuffer(2, 100);
    jb.push(new Float32Array(50).fill(0.5));
    jb.flush();
    expect(jb.buffered).toBe(0);
    const out = new Float32Array(10);
    expect(jb.pull(out)).toBe(0);
    expect(out.every((s) => s === 0)).toBe(true);
  });

  it('drops the oldest audio beyond its limit', () => {
    const jb = new JitterBuffer(1, 4);
    jb.push(Float32Array.from([1, 2, 3]));
    jb.push(Float32Array.from([4, 5, 6]));
    expect(jb.buffered).toBe(4);
    const out = new Float32Array(4);
    jb.pull(out);
    expect(Array.from(out)).toEqual([3, 4, 5, 6]);
  });
});
