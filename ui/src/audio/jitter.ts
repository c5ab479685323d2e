// The playback jitter buffer: reply audio arrives in 20 ms frames paced in real
// time; the buffer holds a little (a prebuffer of about 60 ms) so network jitter
// does not click, and empties at once on an interruption, since audio still queued
// here is the only reply audio the caller could still hear.

export class JitterBuffer {
  private chunks: Float32Array[] = [];
  private offset = 0; // read position in chunks[0]
  private queued = 0;
  private playing = false;

  /**
   * @param prebuffer samples to hold before playback starts (and restarts after an underrun)
   * @param max samples held at most; older audio is dropped beyond it
   */
  constructor(readonly prebuffer: number, readonly max: number) {}

  get buffered(): number {
    return this.queued;
  }

  get isPlaying(): boolean {
    return this.playing;
  }

  push(samples: Float32Array): void {
    if (samples.length === 0) return;
    this.chunks.push(samples);
    this.queued += samples.length;
    while (this.queued > this.max && this.chunks.length > 0) {
      const drop = Math.min(this.queued - this.max, this.chunks[0].length - this.offset);
      this.skip(drop);
    }
    if (!this.playing && this.queued >= this.prebuffer) this.playing = true;
  }

  /** Fills `out` with the next samples (silence while prebuffering or after running dry). */
  pull(out: Float32Array): number {
    out.fill(0);
    if (!this.playing) return 0;
    let written = 0;
    while (written < out.length && this.chunks.length > 0) {
      const head = this.chunks[0];
      const n = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), written);
      written += n;
      this.skip(n);
    }
    if (this.queued === 0) this.playing = false; // underrun or the reply ended: prebuffer again
    return written;
  }

  /** Drops everything queued (an interruption). */
  flush(): void {
    this.chunks = [];
    this.offset = 0;
    this.queued = 0;
    this.playing = false;
  }

  private skip(n: number): void {
    this.offset += n;
    this.queued -= n;
    if (this.offset >= this.chunks[0].length) {
      this.chunks.shift();
      this.offset = 0;
    }
  }
}
