//! End to end on a randomly initialised GPT: ONNX → .mote → host runtime, against tract.

use mote_converters::array::Array;
use mote_converters::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::{host, verify};
use mote_tests::{gpt_options, scratch, untrained_gpt};

fn options(quant: QuantMode) -> mote_converters::convert::Options {
    gpt_options(quant, 16)
}

fn tokens(seed: u64) -> Array {
    let mut r = mote::rng::Rng::new(seed);
    Array::i64(vec![1, 16], (0..16).map(|_| (r.next_u32() % 25) as i64).collect())
}

#[test]
fn f32_matches_tract_and_decode_matches_forward() {
    let dir = scratch("untrained-f32");
    let onnx = untrained_gpt(&dir, 3);
    let c = convert::convert(&onnx, &options(QuantMode::F32)).unwrap();
    let ops: Vec<&str> = c.inspection.ops.iter().filter(|o| o.entry == "forward").map(|o| o.op.as_str()).collect();
    println!("forward ops: {ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "Attention").count(), 2, "attention fused in both blocks");
    assert_eq!(ops.iter().filter(|o| **o == "LayerNorm").count(), 5, "LayerNorm fused");
    assert_eq!(ops.iter().filter(|o| **o == "Gelu").count(), 2, "GELU fused");
    let x = tokens(1);
    let want = verify::tract_reference(&onnx, std::slice::from_ref(&x)).unwrap();
    let got = host::run(&c.bytes, "forward", std::slice::from_ref(&x)).unwrap();
    let cmp = verify::compare(&got[0].to_f32(), &want[0].to_f32()).unwrap();
    println!("f32 vs tract: {cmp:?}");
    assert!(cmp.max_abs <= 1e-4, "{cmp:?}");

    // Incremental decoding reproduces every position of the full pass.
    let model = mote::Model::parse(&c.bytes).unwrap();
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state).unwrap();
    let e = model.entry_by_name("decode_step").unwrap();
    let full = got[0].to_f32();
    let vocab = full.len() / 16;
    let mut worst = 0f32;
    let mote_converters::array::Data::I64(ids) = &x.data else { unreachable!() };
    for (p, &t) in ids.iter().enumerate() {
        s.set_input_i32(e, 0, &[t as i32]).unwrap();
        s.run(e).unwrap();
        let mut step = vec![0f32; vocab];
        s.output_f32(e, 0, &mut step).unwrap();
        for (a, b) in step.iter().zip(&full[p * vocab..(p + 1) * vocab]) {
            worst = worst.max((a - b).abs());
        }
    }
    println!("decode vs forward max-abs {worst:e}");
    assert!(worst <= 1e-5);
}

#[test]
fn int8_runs_and_stays_close_to_f32() {
    let dir = scratch("untrained-int8");
    let onnx = untrained_gpt(&dir, 4);
    let c8 = convert::convert(&onnx, &options(QuantMode::Int8)).unwrap();
    let c32 = convert::convert(&onnx, &options(QuantMode::F32)).unwrap();
    println!("f32 {} bytes, int8 {} bytes", c32.bytes.len(), c8.bytes.len());
    assert!(c8.bytes.len() * 2 < c32.bytes.len());
    let x = tokens(2);
    let a = host::run(&c8.bytes, "forward", std::slice::from_ref(&x)).unwrap();
    let b = host::run(&c32.bytes, "forward", std::slice::from_ref(&x)).unwrap();
    let cmp = verify::compare(&a[0].to_f32(), &b[0].to_f32()).unwrap();
    println!("int8 vs f32: {cmp:?}");
    assert!(cmp.cosine > 0.95, "{cmp:?}");
}

#[test]
fn f16_weights_halve_the_file_and_stay_close_to_tract() {
    let dir = scratch("untrained-f16");
    let onnx = untrained_gpt(&dir, 6);
    let c16 = convert::convert(&onnx, &options(QuantMode::F16)).unwrap();
    let c32 = convert::convert(&onnx, &options(QuantMode::F32)).unwrap();
    println!("f32 weights {} B, f16 weights {} B", c32.inspection.weight_bytes, c16.inspection.weight_bytes);
    assert!(c16.inspection.weight_bytes * 10 < c32.inspection.weight_bytes * 6);
    let x = tokens(3);
    let want = verify::tract_reference(&onnx, std::slice::from_ref(&x)).unwrap();
    let got = host::run(&c16.bytes, "forward", std::slice::from_ref(&x)).unwrap();
    let cmp = verify::compare(&got[0].to_f32(), &want[0].to_f32()).unwrap();
    println!("f16 vs tract: {cmp:?}");
    assert!(cmp.cosine > 0.9999 && cmp.max_rel < 1e-2, "{cmp:?}");
}

#[test]
fn conversion_is_reproducible_byte_for_byte() {
    let onnx = untrained_gpt(&scratch("reproducible"), 8);
    let a = convert::convert(&onnx, &options(QuantMode::Int8)).unwrap().bytes;
    let b = convert::convert(&onnx, &options(QuantMode::Int8)).unwrap().bytes;
    assert!(a == b, "two conversions of one model differ");
}
