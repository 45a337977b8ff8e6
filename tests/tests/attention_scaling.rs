//! Streaming attention keeps the arena linear in the sequence length, and a sequence longer
//! than the converted maximum is a typed error at run time.

use mote::{Error, Model, Session};
use mote_converters::convert::convert;
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::zoo::gpt::{Gpt, GptConfig};
use mote_tests::{gpt_options, scratch};
use std::path::PathBuf;

/// An untrained GPT whose position table allows 128 positions.
fn gpt_128(dir: &std::path::Path) -> PathBuf {
    let vocab = "abcdefghij .;=+0123456789";
    let mut cfg = GptConfig::new(vocab.chars().count());
    cfg.max_seq = 128;
    cfg.d_model = 32;
    cfg.d_ff = 64;
    let gpt = Gpt::new(cfg, 7).expect("build gpt");
    let path = dir.join("gpt128.onnx");
    std::fs::write(&path, gpt.export_onnx(vocab).expect("export")).expect("write onnx");
    path
}

#[test]
fn forward_arena_grows_linearly_with_sequence_length() {
    let onnx = gpt_128(&scratch("scaling"));
    let mut arenas = Vec::new();
    for seq in [16usize, 32, 64, 128] {
        let c = convert(&onnx, &gpt_options(QuantMode::F32, seq)).expect("convert");
        let forward = c.plans.iter().find(|p| p.entry == "forward").expect("forward plan");
        let attention_ops = c.inspection.ops.iter().filter(|o| o.op == "Attention").count();
        assert!(attention_ops >= 2, "attention must be fused at seq {seq}");
        println!("seq {seq:>4}: forward arena {:>7} B (lower bound {:>7} B)", forward.arena, forward.lower_bound);
        arenas.push((seq, forward.arena));
    }
    // Linear: every doubling adds (about) twice the previous increment, never the S² score matrix.
    for w in arenas.windows(3) {
        let (d1, d2) = (w[1].1 - w[0].1, w[2].1 - w[1].1);
        let ratio = d2 as f64 / d1 as f64;
        println!("increment {} -> {}: {d1} B then {d2} B (ratio {ratio:.3})", w[0].0, w[2].0);
        assert!((1.8..=2.2).contains(&ratio), "arena increments {d1} then {d2}: not linear");
    }
    let (seq, arena) = arenas[3];
    let scores_f32 = 2 * seq * seq * 4; // 2 heads of f32 scores, what an unfused graph would hold
    assert!(arena < scores_f32, "arena {arena} B at seq {seq} is not below one S² score matrix ({scores_f32} B)");
}

#[test]
fn sequences_past_the_converted_maximum_are_typed_errors() {
    let onnx = gpt_128(&scratch("too-long"));
    let c = convert(&onnx, &gpt_options(QuantMode::Int8, 16)).expect("convert");
    let model = Model::parse(&c.bytes).expect("parse");
    let mut arena = vec![0u8; model.arena_bytes()];
    let mut state = vec![0u8; model.state_bytes()];
    let mut s = Session::new(&model, &mut arena, &mut state).expect("session");
    let forward = model.entry_by_name("forward").expect("forward");
    assert_eq!(s.set_input_i32(forward, 0, &[1; 17]), Err(Error::SizeMismatch));
    let step = model.entry_by_name("decode_step").expect("decode_step");
    for _ in 0..16 {
        s.set_input_i32(step, 0, &[3]).expect("one token");
        s.run(step).expect("within the cache");
    }
    s.set_input_i32(step, 0, &[3]).expect("one token");
    assert_eq!(s.run(step), Err(Error::StateFull), "the 17th token overflows a 16-position cache");
    assert_eq!(s.position(), 16);
}
