//! Acceptance of the committed zoo encoder–decoder (`models/encdec`): parity with tract and
//! candle, int8 exact match of the reversal task against f32 and the copy baseline, fusion of
//! the three attention kinds (encoder self with padding mask, decoder causal, cross), KV-cached
//! `encode` + `decode_step` decoding against the `forward`-based greedy decoding, MCU budgets,
//! and the committed int8 file being current.

use mote_converters::family::{evaluate_encdec, EncdecFigures};
use mote_converters::zoo::encdec::EncDecReport;
use mote_tests::model_dir;
use std::sync::OnceLock;

fn figures() -> &'static EncdecFigures {
    static F: OnceLock<EncdecFigures> = OnceLock::new();
    F.get_or_init(|| {
        let f = evaluate_encdec(&model_dir("encdec")).unwrap_or_else(|e| panic!("evaluate models/encdec: {e:#}"));
        println!("{f:#?}");
        f
    })
}

fn report() -> EncDecReport {
    EncDecReport::read(&model_dir("encdec")).expect("models/encdec/train_report.json")
}

#[test]
fn f32_mote_matches_tract_and_candle() {
    let f = figures();
    println!("f32 .mote vs tract max-abs {:.3e}, vs candle {:.3e}", f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
}

#[test]
fn int8_exact_match_is_within_a_point_of_f32_and_far_above_the_baseline() {
    let f = figures();
    println!(
        "exact match f32 {:.2}% int8 {:.2}% copy {:.2}%; token accuracy f32 {:.2}% int8 {:.2}% copy {:.2}% ({} examples)",
        100.0 * f.exact_f32,
        100.0 * f.exact_int8,
        100.0 * f.baseline_exact,
        100.0 * f.token_f32,
        100.0 * f.token_int8,
        100.0 * f.baseline_token,
        f.heldout_examples
    );
    assert!(f.heldout_examples >= 200, "{} examples", f.heldout_examples);
    assert!(f.exact_f32 > 0.9, "f32 exact match {:.4}", f.exact_f32);
    assert!(
        (f.exact_f32 - f.exact_int8).abs() <= 0.01,
        "exact match: f32 {:.4} vs int8 {:.4}",
        f.exact_f32,
        f.exact_int8
    );
    assert!(f.exact_int8 > f.baseline_exact + 0.5, "int8 {:.4} vs copy {:.4}", f.exact_int8, f.baseline_exact);
    assert!(f.token_int8 > f.baseline_token + 0.4, "int8 {:.4} vs copy {:.4}", f.token_int8, f.baseline_token);
    // The candle figure of the training report and the runtime's f32 figure agree (greedy
    // decoding may flip on near-ties only).
    let trained = report().model.exact;
    assert!((trained - f.exact_f32).abs() <= 0.01, "candle {trained:.4} vs f32 .mote {:.4}", f.exact_f32);
}

#[test]
fn every_attention_is_fused() {
    let f = figures();
    let c = report().config;
    assert!(f.notes.is_empty(), "converter notes: {:?}", f.notes);
    assert_eq!(f.fused_attention, (c.enc_layers, c.dec_layers, c.dec_layers), "(encoder self, causal, cross)");
}

/// The KV-cached path: `encode` once, then `decode_step` per token, must reproduce the
/// `forward`-based greedy outputs and teacher-forced logits.
#[test]
fn encode_and_decode_step_equal_the_forward_pass() {
    let f = figures();
    assert_eq!(f.entries, ["forward", "encode", "decode_step"], "entries of the int8 file");
    let (same32, same8) = f.cached_equals_forward.expect("the file has encode + decode_step entries");
    assert!(same32, "f32: encode + decode_step greedy outputs differ from the forward-based ones");
    assert!(same8, "int8: encode + decode_step greedy outputs differ from the forward-based ones");
    let (d32, d8) = f.decode_vs_forward.expect("decode entries");
    println!("decode_step vs forward: f32 {d32:.3e}, int8 {d8:.3e}");
    assert!(d32 <= 1e-5, "f32 decode drift {d32}");
    assert_eq!(d8, 0.0, "int8 decode must be bit-exact");
    // Beam search over decode_step after encode (prompt BOS): as good as greedy here.
    let beam = f.beam4_exact_int8.expect("decode entries");
    assert!(beam >= f.exact_int8 - 0.01, "beam 4 exact match {beam:.4} vs greedy {:.4}", f.exact_int8);
}

#[test]
fn fits_the_default_mcu() {
    let f = figures();
    println!(
        "params {} flash f32 {} int8 {} arena {} (lower bound {}) state {} MACs/token {}",
        f.params, f.flash_f32, f.flash_int8, f.arena_int8, f.lower_bound_int8, f.state_int8, f.macs_per_token
    );
    // The .mote stores the trained weights plus a few graph constants (the sinusoid frequencies).
    let trained = report().params;
    assert!(f.params >= trained && f.params <= trained + 64, "{} stored weights, {trained} trained", f.params);
    assert!(f.flash_int8 <= 1 << 20, "int8 flash {}", f.flash_int8);
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "arena {} + state {}", f.arena_int8, f.state_int8);
}

#[test]
fn committed_int8_equals_a_fresh_conversion() {
    assert!(
        figures().committed_int8_up_to_date,
        "models/encdec/model.int8.mote is stale: run `mote zoo refresh encdec`"
    );
}
