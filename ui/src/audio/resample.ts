// A streaming windowed-sinc resampler for mono float audio: the microphone runs at
// the AudioContext's rate (often 44.1 or 48 kHz) and the call at 16 kHz; the reply
// arrives at the call's output rate and plays at the context's. Downsampling
// low-passes below the new Nyquist frequency first, so no alias folds into speech.

const HALF_TAPS = 16; // zero crossings of the sinc on each side, at the filter's cutoff

function blackman(x: number): number {
  // x in [-1, 1]
  return 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
}

export class Resampler {
  readonly ratio: number; // input samples per output sample
  private readonly cutoff: number; // fraction of the input Nyquist kept
  private readonly half: number; // half the filter length, in input samples
  private hist: Float32Array; // input not yet fully used
  private histLen = 0;
  private pos: number; // next output's position, in input samples relative to hist[0]

  constructor(readonly inRate: number, readonly outRate: number) {
    if (!(inRate > 0 && outRate > 0)) throw new Error('sample rates must be positive');
    this.ratio = inRate / outRate;
    this.cutoff = Math.min(1, outRate / inRate) * 0.95;
    this.half = Math.ceil(HALF_TAPS / this.cutoff);
    this.hist = new Float32Array(4096);
    // Start with `half` samples of silence before the first input so the first output
    // is aligned to input sample 0 (the delay is constant, so lengths stay exact).
    this.histLen = this.half;
    this.pos = this.half;
  }

  /** Resamples the next block; output length follows the ratio across calls. */
  process(input: Float32Array): Float32Array {
    if (this.inRate === this.outRate) return input.slice();
    this.append(input);
    const out: number[] = [];
    const half = this.half;
    const c = this.cutoff;
    // An output needs input up to pos + half.
    while (this.pos + half < this.histLen) {
      const center = this.pos;
      const first = Math.max(0, Math.ceil(center - half));
      const last = Math.min(this.histLen - 1, Math.floor(center + half));
      let acc = 0;
      let wsum = 0;
      for (let k = first; k <= last; k++) {
        const d = k - center;
        const x = d * c;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const w = sinc * blackman(d / half);
        acc += this.hist[k] * w;
        wsum += w;
      }
      // Normalised by the taps' sum: unity gain at DC whatever the fractional phase.
      out.push(wsum !== 0 ? acc / wsum : 0);
      this.pos += this.ratio;
    }
    this.compact();
    return Float32Array.from(out);
  }

  private append(input: Float32Array): void {
    if (this.histLen + input.length > this.hist.length) {
      const bigger = new Float32Array(Math.max(this.hist.length * 2, this.histLen + input.length));
      bigger.set(this.hist.subarray(0, this.histLen));
      this.hist = bigger;
    }
    this.hist.set(input, this.histLen);
    this.histLen += input.length;
  }

  /** Drops input no future output can reach. */
  private compact(): void {
    const keepFrom = Math.max(0, Math.floor(this.pos - this.half) - 1);
    if (keepFrom > 0) {
      this.hist.copyWithin(0, keepFrom, this.histLen);
      this.histLen -= keepFrom;
      this.pos -= keepFrom;
    }
  }
}
