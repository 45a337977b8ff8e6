//! Acceptance of the committed zoo T5 prefix-LM (`models/t5`): parity with tract and candle,
//! int8 text-to-text accuracy against f32 and the copy baseline, KV-cached decoding
//! (`prefill` + `decode_step`) against the full pass, fusion of the prefix mask and the
//! bucketed relative bias, MCU budgets, and the committed int8 file being current.

use mote_converters::family::{evaluate_t5, T5Figures};
use mote_converters::zoo::t5::T5Report;
use mote_tests::model_dir;
use std::sync::OnceLock;

fn figures() -> &'static T5Figures {
    static F: OnceLock<T5Figures> = OnceLock::new();
    F.get_or_init(|| {
        let f = evaluate_t5(&model_dir("t5")).unwrap_or_else(|e| panic!("evaluate models/t5: {e:#}"));
        println!("{f:#?}");
        f
    })
}

fn report() -> T5Report {
    T5Report::read(&model_dir("t5")).expect("models/t5/train_report.json")
}

#[test]
fn f32_mote_matches_tract_and_candle() {
    let f = figures();
    println!("f32 .mote vs tract max-abs {:.3e}, vs candle {:.3e}", f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
}

#[test]
fn int8_task_metric_is_within_a_point_of_f32_and_far_above_the_baseline() {
    let f = figures();
    println!(
        "exact match f32 {:.2}% int8 {:.2}% copy {:.2}%; token accuracy f32 {:.2}% int8 {:.2}% copy {:.2}% ({} probes)",
        100.0 * f.exact_f32,
        100.0 * f.exact_int8,
        100.0 * f.baseline_exact,
        100.0 * f.token_f32,
        100.0 * f.token_int8,
        100.0 * f.baseline_token,
        f.heldout_examples
    );
    assert!(f.heldout_examples >= 200, "{} probes", f.heldout_examples);
    for (name, a32, a8) in [("exact match", f.exact_f32, f.exact_int8), ("token accuracy", f.token_f32, f.token_int8)] {
        assert!((a32 - a8).abs() <= 0.01 || (a32 - a8).abs() <= 0.02 * a32, "{name}: f32 {a32:.4} vs int8 {a8:.4}");
    }
    assert!(f.exact_int8 > f.baseline_exact + 0.4, "int8 {:.4} vs copy {:.4}", f.exact_int8, f.baseline_exact);
    assert!(f.token_int8 > f.baseline_token + 0.4, "int8 {:.4} vs copy {:.4}", f.token_int8, f.baseline_token);
    // The candle figure of the training report and the runtime's f32 figure agree (greedy
    // decoding may flip on near-ties only).
    let trained = report().model.exact;
    assert!((trained - f.exact_f32).abs() <= 0.01, "candle {trained:.4} vs f32 .mote {:.4}", f.exact_f32);
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
    println!(
        "params {} flash f32 {} int8 {} arena {} (lower bound {}) state {} MACs/token {}",
        f.params, f.flash_f32, f.flash_int8, f.arena_int8, f.lower_bound_int8, f.state_int8, f.macs_per_token
    );
    assert!(f.flash_int8 <= 1 << 20, "int8 flash {}", f.flash_int8);
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "arena {} + state {}", f.arena_int8, f.state_int8);
    // One int8 K and V cache per layer over the context, shared by `prefill` and `decode_step`.
    let caches = c.n_layers * 2 * c.max_seq * c.d_model;
    assert!(f.state_int8 >= caches && f.state_int8 < caches + 1024, "state {} for {caches} cache bytes", f.state_int8);
}

#[test]
fn committed_int8_equals_a_fresh_conversion() {
    assert!(figures().committed_int8_up_to_date, "models/t5/model.int8.mote is stale: run `mote zoo refresh t5`");
}
