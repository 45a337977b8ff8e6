//! Acceptance of the committed DCGAN-style glyph generator (`models/gan`): batch-norm folded
//! away by the converter, parity with tract and with the candle golden samples committed by
//! `mote zoo train gan` (`golden/z.npy`: latents from `mote::rng::Rng` seed `LATENT_SEED`,
//! `golden/sample.npy`: candle's images of them with inference-form batch-norm), sample
//! quality of runtime samples against held-out glyphs and the baselines in f32 and int8, and
//! the committed files being current.

use mote_converters::family::{evaluate_gan, GanFigures};
use mote_tests::model_dir;
use std::sync::OnceLock;

fn figures() -> &'static GanFigures {
    static F: OnceLock<GanFigures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = model_dir("gan");
        let f = evaluate_gan(&dir).unwrap_or_else(|e| panic!("evaluate {}: {e:#}", dir.display()));
        println!("{f:#?}");
        f
    })
}

#[test]
fn batch_norm_is_folded_and_the_runtime_matches_tract_and_candle() {
    let f = figures();
    println!(
        "ops {:?}; f32 vs tract {:.2e}, vs candle {:.2e}; int8 vs f32 {:.2e}",
        f.ops, f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs, f.int8_vs_f32_max_abs
    );
    let onnx = std::fs::read(model_dir("gan").join("generator.onnx")).expect("generator.onnx");
    let bn_nodes = onnx.windows(18).filter(|w| w == b"BatchNormalization").count();
    assert!(bn_nodes >= 2, "the exported generator has batch-norm nodes ({bn_nodes})");
    assert!(!f.ops.iter().any(|o| o.contains("Norm") || o == "Mul" || o == "Add"), "{:?}", f.ops);
    assert_eq!(f.ops.iter().filter(|o| *o == "ConvTranspose").count(), 2, "{:?}", f.ops);
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "{}", f.f32_vs_tract_max_abs);
    assert!(f.f32_vs_candle_max_abs <= 1e-4, "{}", f.f32_vs_candle_max_abs);
    // int8 quantises the first dense layer (the convolutions stay f32 with f16 weights); the
    // generator's sigmoid is steep (its pixels sit near 0 or 1), so a small logit shift moves a
    // stroke-edge pixel by up to ~0.1. The distribution-level check is the energy distance test.
    assert!(f.int8_vs_f32_max_abs <= 0.2, "{}", f.int8_vs_f32_max_abs);
}

#[test]
fn runtime_samples_are_closer_to_held_out_glyphs_than_the_baselines() {
    let f = figures();
    let r = &f.report;
    println!(
        "energy distance (local features): f32 {:.4} int8 {:.4} candle {:.4}; mean image {:.4}, independent pixels \
         {:.4}, noise {:.4}, floor {:.4}",
        f.energy_f32[1],
        f.energy_int8[1],
        r.energy_candle[1],
        r.energy_mean_image[1],
        r.energy_independent[1],
        r.energy_noise[1],
        r.energy_floor[1]
    );
    assert!(
        (f.energy_f32[1] - r.energy_candle[1]).abs() <= 1e-3,
        "f32 {} vs candle {}",
        f.energy_f32[1],
        r.energy_candle[1]
    );
    assert!(
        (f.energy_int8[1] - f.energy_f32[1]).abs() <= 0.1 * f.energy_f32[1],
        "int8 {} vs f32 {}",
        f.energy_int8[1],
        f.energy_f32[1]
    );
    for (name, e) in [("f32", f.energy_f32[1]), ("int8", f.energy_int8[1])] {
        assert!(r.energy_floor[1] < e, "{name}: the floor is below any model");
        assert!(e < 0.5 * r.energy_mean_image[1], "{name}: {e} vs mean image {}", r.energy_mean_image[1]);
        assert!(e < 0.5 * r.energy_noise[1], "{name}: {e} vs noise {}", r.energy_noise[1]);
    }
}

#[test]
fn committed_files_are_current() {
    let f = figures();
    println!(
        "params {}, flash f32 {} int8 {}, arena/lower bound f32 {:?} int8 {:?}, MACs {} per {} images",
        f.params, f.flash_f32, f.flash_int8, f.arena_f32, f.arena_int8, f.macs, f.batch
    );
    assert!(f.committed_up_to_date.0, "model.mote is stale (mote zoo refresh gan)");
    assert!(f.committed_up_to_date.1, "model.int8.mote is stale (mote zoo refresh gan)");
    assert!(f.arena_int8.0 >= f.arena_int8.1 && f.macs > 0);
    // Folding removes the batch-norm parameters: fewer stored weights than trained ones.
    assert!(f.params < f.report.generator_params, "{} vs {}", f.params, f.report.generator_params);
    let dir = model_dir("gan");
    for png in ["samples.png", "data/glyphs.png"] {
        let bytes = std::fs::read(dir.join(png)).unwrap_or_else(|_| panic!("{png} missing"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}
