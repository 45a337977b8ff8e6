//! The zoo GPT on the host: mote's scalar reference kernels against tract, side by side.
//!
//! `cargo bench -p mote-tests --bench gpt` — compare the ratios, not absolute times.

use criterion::{criterion_group, criterion_main, Criterion};
use mote::backend::{Backend, EntryRunner, TractBackend};
use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::family::gpt_options;
use mote_converters::host::Memory;
use mote_tests::model_dir;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let dir = model_dir("gpt");
    let onnx = dir.join("model.onnx");
    let tokens: Vec<i32> = (0..64).map(|i| (i * 7) % 40).collect();
    let mut logits = vec![0f32; 64 * 40];
    let mut group = c.benchmark_group("gpt forward, 64 tokens");
    for quant in [QuantMode::F32, QuantMode::Int8] {
        let bytes = convert::convert(&onnx, &gpt_options(&dir, quant).unwrap()).unwrap().bytes;
        let model = mote::Model::parse(&bytes).unwrap();
        let mut mem = Memory::for_model(&model);
        let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state).unwrap();
        let entry = model.entry_by_name("forward").unwrap();
        let mut runner = EntryRunner { session: &mut session, entry };
        group.bench_function(format!("mote {quant:?} (scalar reference)"), |b| {
            b.iter(|| {
                runner.set_input_i32(0, black_box(&tokens)).unwrap();
                runner.run().unwrap();
                runner.output_f32(0, &mut logits).unwrap();
            })
        });
    }
    let mut tract = TractBackend::load(&onnx, &[&[1, 64]]).unwrap();
    group.bench_function("tract f32", |b| {
        b.iter(|| {
            tract.set_input_i32(0, black_box(&tokens)).unwrap();
            tract.run().unwrap();
            tract.output_f32(0, &mut logits).unwrap();
        })
    });
    group.finish();

    let bytes = convert::convert(&onnx, &gpt_options(&dir, QuantMode::Int8).unwrap()).unwrap().bytes;
    let model = mote::Model::parse(&bytes).unwrap();
    let mut mem = Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state).unwrap();
    let step = model.entry_by_name("decode_step").unwrap();
    c.bench_function("gpt int8 decode_step (KV cache, 32 tokens of context)", |b| {
        b.iter(|| {
            session.reset();
            for &t in &tokens[..32] {
                session.set_input_i32(step, 0, &[t]).unwrap();
                session.run(step).unwrap();
            }
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
