// Makes the spoken question for the browser's fake microphone: espeak-ng's voice,
// padded with silence, written back as a plain 16-bit PCM mono WAV (Chromium reads
// only that; anything else is silently all zeros).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

/** Reads a PCM16 mono WAV: its rate and samples. */
export function readWav(path) {
  const b = readFileSync(path);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${path} is not a WAV file`);
  let off = 12;
  let rate = 0;
  let channels = 0;
  let bits = 0;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4);
    let size = b.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ') {
      channels = b.readUInt16LE(body + 2);
      rate = b.readUInt32LE(body + 4);
      bits = b.readUInt16LE(body + 14);
    } else if (id === 'data') {
      // espeak-ng writing to a file leaves the data size at 0x7fffffff or 0 sometimes: take what is there.
      if (size === 0 || body + size > b.length) size = b.length - body;
      if (channels !== 1 || bits !== 16) throw new Error(`${path}: want 16-bit mono, got ${bits}-bit ${channels} channels`);
      const samples = new Int16Array(size >> 1);
      for (let i = 0; i < samples.length; i++) samples[i] = b.readInt16LE(body + i * 2);
      return { rate, samples };
    }
    off = body + size + (size & 1);
  }
  throw new Error(`${path}: no data chunk`);
}

export function writeWav(path, rate, samples) {
  const b = Buffer.alloc(44 + samples.length * 2);
  b.write('RIFF', 0, 'ascii');
  b.writeUInt32LE(36 + samples.length * 2, 4);
  b.write('WAVE', 8, 'ascii');
  b.write('fmt ', 12, 'ascii');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20); // PCM
  b.writeUInt16LE(1, 22); // mono
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36, 'ascii');
  b.writeUInt32LE(samples.length * 2, 40);
  for (let i = 0; i < samples.length; i++) b.writeInt16LE(samples[i], 44 + i * 2);
  writeFileSync(path, b);
}

/** Speaks `text` into `out` with `before` and `after` seconds of silence; returns the speech's RMS (0..1). */
export function makeQuestion(text, out, before = 1.5, after = 3) {
  const raw = out.replace(/\.wav$/, '') + '.raw.wav';
  execFileSync('espeak-ng', ['-w', raw, text]);
  const { rate, samples } = readWav(raw);
  const pad = (s) => new Int16Array(Math.round(s * rate));
  const all = new Int16Array(pad(before).length + samples.length + pad(after).length);
  all.set(samples, pad(before).length);
  writeWav(out, rate, all);
  let sum = 0;
  for (const s of samples) sum += (s / 32768) ** 2;
  return { rate, seconds: all.length / rate, rms: Math.sqrt(sum / Math.max(1, samples.length)) };
}
