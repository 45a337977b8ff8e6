//! Acceptance of the committed Glow flow (`models/glow`): both directions as two entries of one
//! `.mote`, exact invertibility and log-likelihood on the runtime against the candle golden
//! values written by `mote zoo train glow`, parity with tract, held-out NLL against a fitted
//! Gaussian in f32 and int8, the stored inverse 1×1 convolutions being inverses, and actnorm and
//! the 1×1 convolutions running as native runtime ops.

use mote_converters::array::Array;
use mote_converters::family::glow::{identity_error, invconv_pairs, InvConvPair};
use mote_converters::family::{evaluate_glow, GlowFigures};
use mote_converters::host;
use mote_converters::import::OnnxModel;
use mote_converters::zoo::glow::GlowReport;
use mote_tests::model_dir;
use std::sync::OnceLock;

/// int8 (f16 convolution weights, f32 activations) may cost at most this much held-out NLL
/// (nats/dim) over f32.
const INT8_NLL_TOLERANCE: f64 = 0.01;

fn figures() -> &'static GlowFigures {
    static F: OnceLock<GlowFigures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = model_dir("glow");
        let f = evaluate_glow(&dir).unwrap_or_else(|e| panic!("evaluate {}: {e:#}", dir.display()));
        println!("glow: {f:#?}");
        f
    })
}

fn report() -> GlowReport {
    GlowReport::read(&model_dir("glow")).expect("models/glow/train_report.json")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn inverse_of_forward_reconstructs_the_data_in_f32() {
    let f = figures();
    println!(
        "max |inverse(forward(x)) - x| over {} images: f32 {:.2e}, int8 {:.2e} (mean {:.2e})",
        f.test_images, f.invertibility_f32, f.invertibility_int8, f.invertibility_int8_mean
    );
    assert!(f.test_images >= 512, "{} test images", f.test_images);
    assert!(f.invertibility_f32 <= 1e-4, "{}", f.invertibility_f32);
    // The committed file itself on the golden batch: forward, then inverse.
    let dir = model_dir("glow");
    let bytes = std::fs::read(dir.join("model.mote")).expect("model.mote");
    let x = Array::read_npy(&dir.join("golden/x.npy")).expect("golden/x.npy");
    let z = host::run(&bytes, "forward", std::slice::from_ref(&x)).expect("forward").remove(0);
    let back = host::run(&bytes, "inverse", &[z]).expect("inverse").remove(0).to_f32();
    let err = max_abs(&back, &x.to_f32());
    assert!(err <= 1e-4, "committed model.mote: inverse(forward(x)) off by {err}");
}

#[test]
fn runtime_log_prob_matches_candle_and_tract() {
    let f = figures();
    println!(
        "log_prob vs candle {:.2e} nats/image, z and samples vs candle {:.2e}, f32 .mote vs tract {:.2e}",
        f.file.log_prob_vs_candle_max_abs, f.file.latent_vs_candle_max_abs, f.file.f32_vs_tract_max_abs
    );
    assert!(f.file.log_prob_vs_candle_max_abs <= 1e-3, "{}", f.file.log_prob_vs_candle_max_abs);
    assert!(f.file.latent_vs_candle_max_abs <= 1e-3, "{}", f.file.latent_vs_candle_max_abs);
    assert!(f.file.f32_vs_tract_max_abs <= 1e-3, "{}", f.file.f32_vs_tract_max_abs);
    // The committed file against candle's golden log-probabilities.
    let dir = model_dir("glow");
    let bytes = std::fs::read(dir.join("model.mote")).expect("model.mote");
    let x = Array::read_npy(&dir.join("golden/x.npy")).expect("golden/x.npy");
    let want = Array::read_npy(&dir.join("golden/log_prob.npy")).expect("golden/log_prob.npy").to_f32();
    let got = host::run(&bytes, "forward", &[x]).expect("run forward").remove(1).to_f32();
    let worst = max_abs(&got, &want);
    assert!(worst <= 1e-3, "committed model.mote log_prob vs golden {worst}");
    // A log-probability of 256 dims is hundreds of nats: the match is not vacuous.
    assert!(want.iter().all(|v| v.abs() > 10.0), "{want:?}");
    // The candle NLL of the training report is what the runtime measures on the whole test set.
    let trained = report().test_nll;
    assert!((trained - f.nll_f32).abs() <= 1e-4, "candle {trained} vs f32 {}", f.nll_f32);
}

#[test]
fn held_out_nll_beats_the_gaussian_in_f32_and_int8() {
    let f = figures();
    println!(
        "test NLL nats/dim: candle {:.4} f32 {:.4} int8 {:.4} Gaussian {:.4}",
        f.nll_candle, f.nll_f32, f.nll_int8, f.baseline_nll
    );
    assert!(f.nll_f32 < f.baseline_nll - 0.5, "f32 {} vs Gaussian {}", f.nll_f32, f.baseline_nll);
    assert!((f.nll_int8 - f.nll_f32).abs() <= INT8_NLL_TOLERANCE, "int8 {} vs f32 {}", f.nll_int8, f.nll_f32);
    // Training improved on the data-dependent initialisation.
    assert!(f.nll_f32 < report().init_nll - 1.0, "f32 {} vs init {}", f.nll_f32, report().init_nll);
}

#[test]
fn runtime_samples_are_glyph_like_unlike_the_gaussians() {
    let f = figures();
    let r = &f.report;
    println!(
        "energy distance pixels / local features: f32 {:.4} / {:.4}, int8 {:.4} / {:.4}, Gaussian {:.4} / {:.4}, \
         floor {:.4} / {:.4}",
        f.energy_f32[0],
        f.energy_f32[1],
        f.energy_int8[0],
        f.energy_int8[1],
        r.energy_gaussian[0],
        r.energy_gaussian[1],
        r.energy_floor[0],
        r.energy_floor[1]
    );
    println!(
        "precision / recall: f32 {:.3} / {:.3}, int8 {:.3} / {:.3}, Gaussian {:.3} / {:.3}, fresh glyphs {:.3} / {:.3}",
        f.pr_f32[0],
        f.pr_f32[1],
        f.pr_int8[0],
        f.pr_int8[1],
        r.pr_gaussian[0],
        r.pr_gaussian[1],
        r.pr_floor[0],
        r.pr_floor[1]
    );
    // Realism: nearly as many samples lie on the data's k-NN manifold as fresh glyphs do, far
    // more than the Gaussian's blurred blobs.
    assert!(f.pr_f32[0] >= 0.9 * r.pr_floor[0], "precision f32 {} vs data {}", f.pr_f32[0], r.pr_floor[0]);
    assert!(f.pr_f32[0] > r.pr_gaussian[0] + 0.2, "precision f32 {} vs Gaussian {}", f.pr_f32[0], r.pr_gaussian[0]);
    // Coverage: more of the held-out glyphs are near some sample than near a Gaussian sample.
    assert!(f.pr_f32[1] > r.pr_gaussian[1] + 0.1, "recall f32 {} vs Gaussian {}", f.pr_f32[1], r.pr_gaussian[1]);
    // In pixel space the samples' energy distance beats the Gaussian's; the floor is below both.
    assert!(r.energy_floor[0] < f.energy_f32[0], "the floor is below any model");
    assert!(f.energy_f32[0] < r.energy_gaussian[0], "f32 {} vs Gaussian {}", f.energy_f32[0], r.energy_gaussian[0]);
    // int8 (f16 weights) samples the same images up to rounding.
    for (a, b) in [(f.energy_int8[0], f.energy_f32[0]), (f.pr_int8[0], f.pr_f32[0]), (f.pr_int8[1], f.pr_f32[1])] {
        assert!((a - b).abs() <= 0.02 * b.abs().max(0.1), "int8 {a} vs f32 {b}");
    }
    // The candle samples of the training report are the runtime's.
    assert!((r.energy_candle[0] - f.energy_f32[0]).abs() < 1e-3 && (r.pr_candle[0] - f.pr_f32[0]).abs() < 0.01);
}

#[test]
fn the_stored_inverse_1x1_convolutions_are_inverses() {
    let f = figures();
    let cfg = report().options.config;
    println!(
        "{} W/W⁻¹ pairs; max |W·W⁻¹ − I| f32 file {:.2e}, int8 file {:.2e}",
        f.invconv_pairs, f.invconv_identity_f32, f.invconv_identity_int8
    );
    assert_eq!(f.invconv_pairs, cfg.levels * cfg.steps);
    assert!(f.invconv_identity_f32 <= 1e-5, "{}", f.invconv_identity_f32);
    assert!(f.invconv_identity_int8 <= 1e-2, "{}", f.invconv_identity_int8);
    // Read back from the committed file, and W from the forward ONNX graph.
    let dir = model_dir("glow");
    let pairs = invconv_pairs(&std::fs::read(dir.join("model.mote")).expect("model.mote")).expect("pairs");
    assert_eq!(pairs.len(), cfg.levels * cfg.steps);
    assert!(identity_error(&pairs).expect("square") <= 1e-5);
    let onnx = OnnxModel::load(&dir.join("forward.onnx")).expect("forward.onnx");
    for InvConvPair { layer, w, w_inv } in &pairs {
        let init =
            onnx.proto.graph.as_ref().and_then(|g| g.initializer.iter().find(|t| t.name == format!("{layer}.weight")));
        let init = init.unwrap_or_else(|| panic!("{layer}.weight not in forward.onnx"));
        let onnx_w: Vec<f32> =
            init.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        assert_eq!(&onnx_w, w, "{layer}: the stored W is the exported one");
        assert!(w_inv.iter().zip(w).any(|(a, b)| a != b), "{layer}: W⁻¹ differs from W");
    }
}

#[test]
fn actnorm_and_1x1_convolutions_run_as_native_ops() {
    let cfg = report().options.config;
    let k = cfg.levels * cfg.steps;
    for file in ["model.mote", "model.int8.mote"] {
        let bytes = std::fs::read(model_dir("glow").join(file)).expect("model file");
        let model = mote::Model::parse(&bytes).expect("parse");
        let ins = mote_converters::report::inspect(&model).expect("inspect");
        let ops = |entry: &str, layer: &str| -> Vec<(String, Vec<String>)> {
            ins.ops
                .iter()
                .filter(|r| r.entry == entry && r.output.contains(&format!(".{layer}/")))
                .map(|r| (r.op.clone(), r.inputs.clone()))
                .collect()
        };
        for (entry, actnorm) in [("forward", ["Mul", "Add"]), ("inverse", ["Sub", "Div"])] {
            let an = ops(entry, "actnorm");
            let names: Vec<&str> = an.iter().map(|(o, _)| o.as_str()).collect();
            assert_eq!(names.len(), 2 * k, "{file} {entry}: actnorm ops {names:?}");
            assert!(names.chunks(2).all(|p| p == actnorm), "{file} {entry}: {names:?}");
            // Per-channel parameters [1, C, 1, 1] broadcast over [n, C, H, W].
            assert!(an.iter().all(|(_, i)| i.len() == 2 && i[1].contains("[1, ") && i[1].ends_with(", 1, 1]")));
            let inv = ops(entry, "invconv");
            assert_eq!(inv.len(), k, "{file} {entry}: {inv:?}");
            for (op, inputs) in &inv {
                assert_eq!(op, "Conv", "{file} {entry}");
                // No bias; a square [C, C, 1, 1] kernel.
                assert_eq!(inputs.len(), 2, "{file} {entry}: {inputs:?}");
                let dims: Vec<&str> =
                    inputs[1].split(['[', ']', ',']).map(str::trim).filter(|s| !s.is_empty()).collect();
                assert_eq!(dims.len(), 5, "{inputs:?}");
                assert_eq!((dims[1], dims[3], dims[4]), (dims[2], "1", "1"), "{inputs:?}");
            }
        }
        // No patch-MatMul lowering anywhere, and the squeeze's rank-6 transposes are there.
        assert!(ins.ops.iter().all(|r| r.op != "MatMul"), "{file}");
        let t6 = ins.ops.iter().filter(|r| r.op == "Transpose" && r.inputs[0].matches(',').count() == 5).count();
        assert_eq!(t6, 2 * cfg.levels, "{file}: one squeeze per level forward, one unsqueeze per level inverse");
    }
}

#[test]
fn one_file_two_entries_sharing_weights_and_current() {
    let f = figures();
    println!(
        "params {} (trainable {}), flash f32 {} (separately {}), int8 {}, arena/lower bound/no in-place f32 {}/{}/{} \
         int8 {}/{}/{}, MACs fwd {} inv {} per {} images",
        f.file.params,
        f.report.params,
        f.file.flash_f32,
        f.file.flash_f32_separate,
        f.file.flash_int8,
        f.file.arena_f32,
        f.file.lower_bound_f32,
        f.arena_f32_without_in_place,
        f.file.arena_int8,
        f.file.lower_bound_int8,
        f.arena_int8_without_in_place,
        f.file.macs_forward,
        f.file.macs_inverse,
        f.file.batch
    );
    assert_eq!(f.file.entries, ["forward", "inverse"]);
    // Shared coupling nets and actnorms are stored once: well under two separate files.
    assert!(
        10 * f.file.flash_f32 < 6 * f.file.flash_f32_separate,
        "{} vs {}",
        f.file.flash_f32,
        f.file.flash_f32_separate
    );
    assert!(f.file.params * 4 < f.file.flash_f32, "{} weights in {} bytes", f.file.params, f.file.flash_f32);
    // int8 stores the convolution kernels (nearly all weights) as f16: 2 bytes saved each.
    assert!(f.file.flash_f32 - f.file.flash_int8 > f.file.params, "{} vs {}", f.file.flash_int8, f.file.flash_f32);
    assert!(f.file.arena_f32 >= f.file.lower_bound_f32 && f.file.arena_int8 >= f.file.lower_bound_int8);
    assert!(f.arena_f32_without_in_place >= f.file.arena_f32);
    // Under ~3 M MACs per image in each direction.
    let per = |m: u64| m / f.file.batch as u64;
    assert!(per(f.file.macs_forward) > 100_000 && per(f.file.macs_forward) < 3_000_000, "{}", f.file.macs_forward);
    assert!(per(f.file.macs_inverse) > 100_000 && per(f.file.macs_inverse) < 3_000_000, "{}", f.file.macs_inverse);
    assert!(f.file.committed_f32_up_to_date, "model.mote is stale (mote zoo refresh glow)");
    assert!(f.file.committed_int8_up_to_date, "model.int8.mote is stale (mote zoo refresh glow)");
    let dir = model_dir("glow");
    let png = std::fs::read(dir.join("samples.png")).expect("samples.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
