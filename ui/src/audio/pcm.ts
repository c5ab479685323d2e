// PCM16 (signed 16-bit little-endian, mono): the `/agent` wire format. Pure
// functions, shared by the capture worklet, the player and the tests.

/** Float samples in [-1, 1] to PCM16; out-of-range input is clipped, NaN is silence. */
export function floatToPcm16(input: ArrayLike<number>): Int16Array {
  const out = new Int16Array(input.length);
  for (let i = 0; i < input.length; i++) {
    let s = input[i];
    if (!(s === s)) s = 0; // NaN
    if (s > 1) s = 1;
    else if (s < -1) s = -1;
    // Symmetric scale, rounding half away from zero: 1.0 -> 32767, -1.0 -> -32767.
    const v = Math.round(Math.abs(s) * 32767);
    out[i] = s < 0 ? -v : v;
  }
  return out;
}

/** PCM16 to floats in [-1, 1]. */
export function pcm16ToFloat(input: Int16Array): Float32Array {
  const out = new Float32Array(input.length);
  for (let i = 0; i < input.length; i++) out[i] = input[i] / 32768;
  return out;
}

/** Little-endian bytes of PCM16 samples (the wire order), whatever the host's order. */
export function pcm16ToBytes(samples: Int16Array): ArrayBuffer {
  const buf = new ArrayBuffer(samples.length * 2);
  const view = new DataView(buf);
  for (let i = 0; i < samples.length; i++) view.setInt16(i * 2, samples[i], true);
  return buf;
}

/** PCM16 samples from little-endian bytes; a trailing odd byte is ignored. */
export function bytesToPcm16(bytes: ArrayBuffer): Int16Array {
  const n = bytes.byteLength >> 1;
  const view = new DataView(bytes);
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

/** Root mean square of float samples (0 for an empty block). */
export function rms(samples: ArrayLike<number>): number {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / samples.length);
}

/**
 * Cuts a stream of PCM16 samples into fixed frames (20 ms on the wire), keeping the
 * remainder for the next push.
 */
export class Framer {
  private buf: Int16Array;
  private len = 0;

  constructor(readonly frameSamples: number) {
    if (!(frameSamples > 0)) throw new Error('frameSamples must be positive');
    this.buf = new Int16Array(frameSamples);
  }

  /** Adds samples; returns the whole frames now complete, in order. */
  push(samples: Int16Array): Int16Array[] {
    const frames: Int16Array[] = [];
    let i = 0;
    while (i < samples.length) {
      const take = Math.min(this.frameSamples - this.len, samples.length - i);
      this.buf.set(samples.subarray(i, i + take), this.len);
      this.len += take;
      i += take;
      if (this.len === this.frameSamples) {
        frames.push(this.buf);
        this.buf = new Int16Array(this.frameSamples);
        this.len = 0;
      }
    }
    return frames;
  }
}
