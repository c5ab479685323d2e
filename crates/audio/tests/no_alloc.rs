//! The per-frame hot path allocates nothing once warmed up: resampling, mu-law, PCM16
//! decoding into a reused buffer, and the VAD. A counting global allocator checks it.
//! (One test in this binary, so no other test's allocations are counted.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::sine;
use voxgate_audio::{Resampler, SampleRate, VadMachine, VadParams, mulaw, pcm};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_frames_do_not_allocate() {
    let in48 = sine(440.0, 48000, 1.0, 0.5);
    let in16 = sine(440.0, 16000, 1.0, 0.5);
    let bytes16 = pcm::encode_pcm16le(&in16);
    let mut down = Resampler::new(SampleRate::Hz48000, SampleRate::Hz16000);
    let mut up = Resampler::new(SampleRate::Hz16000, SampleRate::Hz48000);
    let mut vad = VadMachine::earshot(VadParams::default()).unwrap();
    let (mut out16, mut out48, mut decoded) = (Vec::new(), Vec::new(), Vec::new());
    let mut events = Vec::with_capacity(4);
    let (mut law, mut back) = ([0u8; 160], [0i16; 160]);

    let mut frame = |i: usize| {
        out16.clear();
        out48.clear();
        decoded.clear();
        events.clear();
        pcm::decode_pcm16le_into(&bytes16[i * 640..(i + 1) * 640], &mut decoded).unwrap();
        down.process(&in48[i * 960..(i + 1) * 960], &mut out16);
        vad.push(&out16, &mut events);
        up.process(&decoded, &mut out48);
        mulaw::encode_into(&decoded[..160], &mut law);
        mulaw::decode_into(&law, &mut back);
    };
    for i in 0..5 {
        frame(i); // warm-up: buffers grow to one frame
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 5..50 {
        frame(i);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "allocations in 45 steady-state frames"
    );
}
