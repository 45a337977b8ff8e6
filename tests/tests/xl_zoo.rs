//! Acceptance of the committed zoo Transformer-XL (`models/transformer-xl`): parity with tract
//! over consecutive segments (tract given the memory explicitly, the `.mote` session carrying
//! it in its state region), memory on vs off, int8 vs f32, the MCU budget.

use mote_converters::family::evaluate_xl;
use mote_tests::model_dir;

#[test]
fn committed_transformer_xl_meets_the_acceptance_figures() {
    let f = evaluate_xl(&model_dir("transformer-xl")).expect("evaluate models/transformer-xl");
    println!("{f:#?}");
    println!(
        "f32 .mote vs tract over {} consecutive segments: max-abs {:.2e} (vs candle {:.2e})",
        f.golden_segments, f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs
    );
    println!(
        "held-out loss (nats/char) with memory / memory reset every segment: f32 {:.4} / {:.4}, int8 {:.4} / {:.4}",
        f.loss_f32, f.loss_f32_no_memory, f.loss_int8, f.loss_int8_no_memory
    );
    println!(
        "recall accuracy with / without memory: f32 {:.1}% / {:.1}%; bigram baseline {:.4} nats/char",
        100.0 * f.recall_accuracy.0,
        100.0 * f.recall_accuracy_no_memory.0,
        f.baselines.1
    );

    assert!(f.golden_segments >= 3, "only {} golden segments", f.golden_segments);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "f32 .mote vs tract max-abs {}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-3, "f32 .mote vs candle max-abs {}", f.f32_vs_candle_max_abs);
    assert!(f.fused_xl_attention_ops >= 2, "{} fused XL attention ops", f.fused_xl_attention_ops);

    // Memory carried across segments beats memory reset before every segment, clearly.
    assert!(f.heldout_positions >= 4096, "{} held-out positions", f.heldout_positions);
    assert!(
        f.loss_f32 <= 0.95 * f.loss_f32_no_memory,
        "memory must help: {} with vs {} without",
        f.loss_f32,
        f.loss_f32_no_memory
    );
    assert!(f.loss_int8 <= 0.95 * f.loss_int8_no_memory, "int8: {} vs {}", f.loss_int8, f.loss_int8_no_memory);
    assert!(f.recall_accuracy.0 > f.recall_accuracy_no_memory.0, "recall {:?}", f.recall_accuracy);
    // It learned: far below the bigram baseline.
    assert!(f.loss_f32 < 0.7 * f.baselines.1, "loss {} vs bigram {}", f.loss_f32, f.baselines.1);

    assert!((f.loss_int8 - f.loss_f32).abs() <= 0.02 * f.loss_f32, "loss f32 {} int8 {}", f.loss_f32, f.loss_int8);
    assert!(f.top1_agreement >= 0.97, "int8 vs f32 agreement {:.4}", f.top1_agreement);
    assert!(
        f.committed_int8_up_to_date,
        "models/transformer-xl/model.int8.mote is stale: run `mote zoo refresh transformer-xl`"
    );
    // Default MCU: arena + state + ~8 KiB stack within 256 KiB, file within 1 MiB.
    assert!(f.arena_int8 + f.state_int8 + 8 * 1024 <= 256 * 1024, "arena {} + state {}", f.arena_int8, f.state_int8);
    assert!(f.flash_int8 <= 1 << 20, "flash {}", f.flash_int8);
}
