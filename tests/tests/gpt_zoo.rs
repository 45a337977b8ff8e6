//! Acceptance of the committed zoo GPT (`models/gpt`): parity with tract and with the
//! training framework, int8 quality against f32, KV-cached decoding, memory plan quality.

use mote_converters::family::evaluate_gpt;
use mote_tests::model_dir;

#[test]
fn committed_gpt_meets_the_acceptance_figures() {
    let f = evaluate_gpt(&model_dir("gpt")).expect("evaluate models/gpt");
    println!("{f:#?}");
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
    assert!(f.heldout_positions >= 1000, "{} held-out positions", f.heldout_positions);
    assert!(f.top1_agreement >= 0.98, "int8 vs f32 top-1 agreement {:.4}", f.top1_agreement);
    assert!((f.loss_int8 - f.loss_f32).abs() <= 0.02 * f.loss_f32, "loss f32 {} int8 {}", f.loss_f32, f.loss_int8);
    assert!(f.decode_vs_forward_f32 <= 1e-5, "f32 decode drift {}", f.decode_vs_forward_f32);
    assert_eq!(f.decode_vs_forward_int8, 0.0, "int8 decode must be bit-exact");
    assert!(
        f.plan_ratio_f32 <= 1.10 && f.plan_ratio_int8 <= 1.10,
        "plan ratios {} {}",
        f.plan_ratio_f32,
        f.plan_ratio_int8
    );
    assert!(f.committed_int8_up_to_date, "models/gpt/model.int8.mote is stale: re-run `mote zoo train gpt`");
    assert!(f.flash_int8 <= 1 << 20 && f.arena_int8 + f.state_int8 <= 256 * 1024, "fits the default MCU budget");
}
