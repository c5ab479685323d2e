//! G.711 mu-law, the codec of telephony transports (8 kHz, one byte per sample). Inbound
//! mu-law bytes are decoded here into PCM16 before resampling; outbound PCM16 is encoded
//! here after resampling to 8 kHz.
//!
//! Encoding follows ITU-T G.711 as in the reference `linear2ulaw`: bias 0x84 (132), clip
//! at 32635, three exponent bits, four mantissa bits, all bits inverted. Decoding is a
//! 256-entry table built at compile time.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encode one PCM16 sample as a mu-law byte.
#[inline]
pub fn encode_sample(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // s is in [132, 32767], so s >> 7 is in [1, 255] and its highest set bit is the exponent.
    let exponent = 31 - ((s >> 7) as u32).leading_zeros() as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

const fn decode_one(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn build_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_one(i as u8);
        i += 1;
    }
    table
}

/// mu-law byte -> PCM16 sample.
static DECODE_TABLE: [i16; 256] = build_table();

/// Decode one mu-law byte as a PCM16 sample.
#[inline]
pub fn decode_sample(byte: u8) -> i16 {
    DECODE_TABLE[byte as usize]
}

/// Encode samples, writing into `out` (lengths are zipped: give it `samples.len()` bytes).
pub fn encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, s) in out.iter_mut().zip(samples) {
        *o = encode_sample(*s);
    }
}

/// Decode bytes, writing into `out` (lengths are zipped: give it `bytes.len()` samples).
pub fn decode_into(bytes: &[u8], out: &mut [i16]) {
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = decode_sample(*b);
    }
}

/// Encode samples into a new vector of mu-law bytes.
pub fn encode(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode_sample(s)).collect()
}

/// Decode mu-law bytes into a new vector of samples.
pub fn decode(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().map(|&b| decode_sample(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reference_values() {
        // Values of the ITU-T G.711 reference implementation (Sun g711.c linear2ulaw).
        let cases: &[(i16, u8)] = &[
            (0, 0xFF),
            (-1, 0x7F),
            (1, 0xFF),
            (-2, 0x7F),
            (8, 0xFE),
            (-8, 0x7E),
            (100, 0xF2),
            (-100, 0x72),
            (1000, 0xCE),
            (-1000, 0x4E),
            (32124, 0x80),
            (32635, 0x80),
            (i16::MAX, 0x80),
            (-32124, 0x00),
            (i16::MIN, 0x00),
        ];
        for &(sample, byte) in cases {
            assert_eq!(encode_sample(sample), byte, "encode({sample})");
        }
    }

    #[test]
    fn decodes_reference_values() {
        let cases: &[(u8, i16)] = &[
            (0xFF, 0),
            (0x7F, 0),
            (0xFE, 8),
            (0x7E, -8),
            (0xF0, 120),
            (0xEF, 132),
            (0x80, 32124),
            (0x00, -32124),
            (0xCE, 988),
            (0x4E, -988),
        ];
        for &(byte, sample) in cases {
            assert_eq!(decode_sample(byte), sample, "decode({byte:#04x})");
        }
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for b in 0..=255u8 {
            let back = encode_sample(decode_sample(b));
            // 0x7F is "negative zero", which decodes to 0 and re-encodes as 0xFF.
            let expected = if b == 0x7F { 0xFF } else { b };
            assert_eq!(back, expected, "code {b:#04x}");
        }
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for s in i16::MIN..=i16::MAX {
            let back = decode_sample(encode_sample(s));
            let x = i32::from(s).clamp(-CLIP, CLIP);
            let err = (i32::from(back) - x).abs();
            // The step in the segment of |x| is 2^(exponent + 3) and (|x| + 132) >= 2^(exponent + 7),
            // so half a step is at most (|x| + 132) / 32.
            let bound = (x.abs() + BIAS) / 32 + 1;
            assert!(err <= bound, "{s} -> {back}: error {err} > {bound}");
            // Sign is kept (up to zero).
            assert!(i32::from(back) * x >= 0, "{s} -> {back}");
        }
        // Clipping: full scale maps to the top code.
        assert_eq!(decode_sample(encode_sample(i16::MAX)), 32124);
    }

    #[test]
    fn slice_helpers_match_scalar() {
        let samples: Vec<i16> = (-400..400).map(|i| (i * 81) as i16).collect();
        let bytes = encode(&samples);
        let mut bytes2 = vec![0u8; samples.len()];
        encode_into(&samples, &mut bytes2);
        assert_eq!(bytes, bytes2);
        let mut back = vec![0i16; bytes.len()];
        decode_into(&bytes, &mut back);
        assert_eq!(back, decode(&bytes));
    }
}
