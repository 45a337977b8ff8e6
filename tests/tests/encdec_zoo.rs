//! Acceptance of the committed zoo encoder–decoder (`models/encdec`): parity with tract and
//! candle, int8 exact match of the reversal task against f32 and the copy baseline, fusion of
//! the three attention kinds (encoder self with padding mask, decoder causal, cross), KV-cached
//! `encode` + `decode_step` decoding against the `forward`-based greedy decoding, MCU budgets,
//! and the committed int8 file being current.

use mote_converters::family::{evaluate_encdec, EncdecFigures};
use mote_converters::zoo::encdec::EncDecReport;
use mote_tests::{assert_fits_default_mcu, assert_golden_parity, check_greedy_scores, measured, model_dir};
use std::sync::OnceLock;

fn figures() -> &'static EncdecFigures {
    static F: OnceLock<EncdecFigures> = OnceLock::new();
    F.get_or_init(|| measured("encdec", evaluate_encdec))
}

fn report() -> EncDecReport {
    EncDecReport::read(&model_dir("encdec")).expect("models/encdec/train_report.json")
}

#[test]
fn f32_mote_matches_tract_and_candle() {
    assert_golden_parity(&figures().file);
}

#[test]
fn int8_exact_match_is_within_a_point_of_f32_and_far_above_the_baseline() {
    let s = &figures().scores;
    check_greedy_scores(s, "examples", report().model.exact);
    assert!(s.exact_f32 > 0.9, "f32 exact match {:.4}", s.exact_f32);
    assert!(
        (s.exact_f32 - s.exact_int8).abs() <= 0.01,
        "exact match: f32 {:.4} vs int8 {:.4}",
        s.exact_f32,
        s.exact_int8
    );
    assert!(s.exact_int8 > s.baseline_exact + 0.5, "int8 {:.4} vs copy {:.4}", s.exact_int8, s.baseline_exact);
    assert!(s.token_int8 > s.baseline_token + 0.4, "int8 {:.4} vs copy {:.4}", s.token_int8, s.baseline_token);
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
    let greedy = f.scores.exact_int8;
    assert!(beam >= greedy - 0.01, "beam 4 exact match {beam:.4} vs greedy {greedy:.4}");
}

#[test]
fn fits_the_default_mcu() {
    let f = figures();
    assert_fits_default_mcu(&f.file, f.macs_per_token);
    // The .mote stores the trained weights plus a few graph constants (the sinusoid frequencies).
    let (stored, trained) = (f.file.params, report().params);
    assert!(stored >= trained && stored <= trained + 64, "{stored} stored weights, {trained} trained");
}

#[test]
fn committed_int8_equals_a_fresh_conversion() {
    assert!(
        figures().file.committed_int8_up_to_date,
        "models/encdec/model.int8.mote is stale: run `mote zoo refresh encdec`"
    );
}
