//! Acceptance of the committed zoo T5 prefix-LM (`models/t5`): parity with tract and candle,
//! int8 text-to-text accuracy against f32 and the copy baseline, KV-cached decoding
//! (`prefill` + `decode_step`) against the full pass, fusion of the prefix mask and the
//! bucketed relative bias, MCU budgets, and the committed int8 file being current.

use mote_converters::family::{evaluate_t5, T5Figures};
use mote_converters::zoo::t5::T5Report;
use mote_tests::{assert_fits_default_mcu, assert_golden_parity, check_greedy_scores, measured, model_dir};
use std::sync::OnceLock;

fn figures() -> &'static T5Figures {
    static F: OnceLock<T5Figures> = OnceLock::new();
    F.get_or_init(|| measured("t5", evaluate_t5))
}

fn report() -> T5Report {
    T5Report::read(&model_dir("t5")).expect("models/t5/train_report.json")
}

#[test]
fn f32_mote_matches_tract_and_candle() {
    assert_golden_parity(&figures().file);
}

#[test]
fn int8_task_metric_is_within_a_point_of_f32_and_far_above_the_baseline() {
    let s = &figures().scores;
    check_greedy_scores(s, "probes", report().model.exact);
    for (name, a32, a8) in [("exact match", s.exact_f32, s.exact_int8), ("token accuracy", s.token_f32, s.token_int8)] {
        assert!((a32 - a8).abs() <= 0.01 || (a32 - a8).abs() <= 0.02 * a32, "{name}: f32 {a32:.4} vs int8 {a8:.4}");
    }
    assert!(s.exact_int8 > s.baseline_exact + 0.4, "int8 {:.4} vs copy {:.4}", s.exact_int8, s.baseline_exact);
    assert!(s.token_int8 > s.baseline_token + 0.4, "int8 {:.4} vs copy {:.4}", s.token_int8, s.baseline_token);
}

#[test]
fn incremental_decoding_equals_the_full_pass() {
    let f = figures();
    println!(
        "prefill + decode_step vs forward: f32 {:.3e}, int8 {:.3e}",
        f.decode_vs_forward_f32, f.decode_vs_forward_int8
    );
    assert!(f.decode_vs_forward_f32 <= 1e-5, "f32 decode drift {}", f.decode_vs_forward_f32);
    assert_eq!(f.decode_vs_forward_int8, 0.0, "int8 decode must be bit-exact");
}

#[test]
fn prefix_mask_and_relative_bias_are_fused_in_every_entry() {
    let f = figures();
    let layers = report().config.n_layers;
    let names: Vec<&str> = f.fused_prefix_bias_ops.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["forward", "prefill", "decode_step"]);
    for (entry, n) in &f.fused_prefix_bias_ops {
        assert_eq!(*n, layers, "{entry}: {n} fused prefix+bias attention ops, {layers} layers");
    }
}

#[test]
fn fits_the_default_mcu_and_caches_are_shared() {
    let f = figures();
    let c = report().config;
    assert_fits_default_mcu(&f.file, f.macs_per_token);
    // One int8 K and V cache per layer over the context, shared by `prefill` and `decode_step`.
    let (state, caches) = (f.file.state_int8, c.n_layers * 2 * c.max_seq * c.d_model);
    assert!(state >= caches && state < caches + 1024, "state {state} for {caches} cache bytes");
}

#[test]
fn committed_int8_equals_a_fresh_conversion() {
    assert!(figures().file.committed_int8_up_to_date, "models/t5/model.int8.mote is stale: run `mote zoo refresh t5`");
}
