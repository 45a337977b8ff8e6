//! The core API runs from fixed `[u8; N]` buffers without touching an allocator: parse,
//! session, forward pass and KV-cached generation all happen with allocation forbidden.

use mote::generate::{Generator, Sampler};
use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_tests::{gpt_options, scratch, untrained_gpt};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts allocations made while armed.
struct Counting;
static ARMED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::SeqCst) {
            COUNT.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn inference_and_generation_never_allocate() {
    let onnx = untrained_gpt(&scratch("noalloc"), 9);
    let bytes = convert::convert(&onnx, &gpt_options(QuantMode::Int8, 16)).unwrap().bytes;
    let mut arena = [0u8; 32 * 1024];
    let mut state = [0u8; 8 * 1024];
    let mut logits = [0f32; 16 * 25];
    let mut generated = [0i32; 8];

    ARMED.store(true, Ordering::SeqCst);
    let model = mote::Model::parse(&bytes).unwrap();
    let mut session = mote::Session::new(&model, &mut arena, &mut state).unwrap();
    let forward = model.entry_by_name("forward").unwrap();
    let tokens: [i32; 16] = core::array::from_fn(|i| (i % 25) as i32);
    session.set_input_i32(forward, 0, &tokens).unwrap();
    session.run(forward).unwrap();
    session.output_f32(forward, 0, &mut logits).unwrap();
    let mut g = Generator::new(&mut session).unwrap();
    let mut sampler = Sampler::top_k(0.8, 5, 7).unwrap();
    let mut n = 0;
    g.generate(&[1, 2, 3], generated.len(), &mut sampler, |t| {
        generated[n] = t;
        n += 1;
        true
    })
    .unwrap();
    ARMED.store(false, Ordering::SeqCst);

    let allocations = COUNT.load(Ordering::SeqCst);
    println!(
        "arena {} B, state {} B, allocations while running: {allocations}",
        model.arena_bytes(),
        model.state_bytes()
    );
    assert_eq!(allocations, 0);
    assert_eq!(n, generated.len());
    assert!(generated.iter().all(|&t| (0..25).contains(&t)));
    assert!(logits.iter().all(|v| v.is_finite()) && logits.iter().any(|&v| v != 0.0));
}
