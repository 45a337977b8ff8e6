//! Acceptance of the committed planar flow (`models/planar`): both directions as two entries
//! of one `.mote` sharing their weights, `forward` inverting every planar layer with unrolled
//! Newton steps on the runtime; exact invertibility and log-likelihood on the runtime (against
//! the candle golden values that `mote zoo train planar` wrote from the trained candle model),
//! held-out NLL against a fitted Gaussian in f32 and int8, sample quality against held-out
//! data, and the committed files being current.

use mote_converters::array::Array;
use mote_converters::family::{evaluate_planar, FlowFigures};
use mote_converters::host;
use mote_converters::zoo::planar::PlanarReport;
use mote_tests::model_dir;
use std::sync::OnceLock;

/// int8 `forward` quantises the Newton iterates, so it is only an approximate inverse and its
/// `log_prob` an approximate density: its held-out NLL may differ from f32 by at most this
/// much (nats/dim).
const INT8_NLL_TOLERANCE: f64 = 0.05;

fn figures() -> &'static FlowFigures {
    static F: OnceLock<FlowFigures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = model_dir("planar");
        let f = evaluate_planar(&dir).unwrap_or_else(|e| panic!("evaluate {}: {e:#}", dir.display()));
        println!("planar: {f:#?}");
        f
    })
}

#[test]
fn inverse_of_forward_reconstructs_the_data_in_f32() {
    let f = figures();
    println!(
        "planar: max |inverse(forward(x)) - x| f32 {:.2e}, int8 {:.2e} (mean {:.2e})",
        f.invertibility_f32, f.invertibility_int8, f.invertibility_int8_mean
    );
    assert!(f.test_points >= 1000, "{} test points", f.test_points);
    assert!(f.invertibility_f32 <= 1e-4, "{}", f.invertibility_f32);
    // The Newton inverses converged in training (and so in the exported graph, which
    // computes the same iteration).
    let report = PlanarReport::read(&model_dir("planar")).expect("train_report.json");
    assert!(report.newton_residual < 1e-6, "Newton residual {}", report.newton_residual);
}

#[test]
fn runtime_log_prob_matches_candle_and_tract() {
    let f = figures();
    println!(
        "planar: log_prob vs candle {:.2e} nats, z/samples vs candle {:.2e}, vs tract {:.2e}",
        f.file.log_prob_vs_candle_max_abs, f.file.latent_vs_candle_max_abs, f.file.f32_vs_tract_max_abs
    );
    assert!(f.file.log_prob_vs_candle_max_abs <= 1e-3, "{}", f.file.log_prob_vs_candle_max_abs);
    assert!(f.file.latent_vs_candle_max_abs <= 1e-3, "{}", f.file.latent_vs_candle_max_abs);
    assert!(f.file.f32_vs_tract_max_abs <= 1e-4, "{}", f.file.f32_vs_tract_max_abs);
    // The committed file itself (not only a fresh conversion) on the golden batch.
    let dir = model_dir("planar");
    let bytes = std::fs::read(dir.join("model.mote")).expect("model.mote");
    let x = Array::read_npy(&dir.join("golden/x.npy")).expect("golden/x.npy");
    let want = Array::read_npy(&dir.join("golden/log_prob.npy")).expect("golden/log_prob.npy").to_f32();
    let got = host::run(&bytes, "forward", &[x]).expect("run forward").remove(1).to_f32();
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-3, "committed model.mote log_prob vs golden {worst}");
    // The candle NLL of the training report is what the runtime measures.
    let trained = PlanarReport::read(&dir).expect("train_report.json").test_nll;
    assert!((trained - f.nll_f32).abs() <= 1e-3, "candle {trained} vs f32 {}", f.nll_f32);
}

#[test]
fn held_out_nll_beats_the_gaussian_in_f32_and_int8() {
    let f = figures();
    println!(
        "planar: test NLL nats/dim candle {:.4} f32 {:.4} int8 {:.4} Gaussian {:.4}",
        f.nll_candle, f.nll_f32, f.nll_int8, f.baseline_nll
    );
    assert!(f.nll_f32 < f.baseline_nll - 0.2, "f32 {} vs Gaussian {}", f.nll_f32, f.baseline_nll);
    assert!((f.nll_int8 - f.nll_f32).abs() <= INT8_NLL_TOLERANCE, "int8 {} vs f32 {}", f.nll_int8, f.nll_f32);
    assert!(f.nll_int8 < f.baseline_nll - 0.2, "int8 {} vs Gaussian {}", f.nll_int8, f.baseline_nll);
}

#[test]
fn runtime_samples_are_closer_to_held_out_data_than_the_gaussian() {
    let f = figures();
    println!(
        "planar: energy distance f32 {:.5} int8 {:.5} Gaussian {:.5} floor {:.5}",
        f.energy_f32, f.energy_int8, f.energy_baseline, f.energy_floor
    );
    assert!(f.energy_floor < f.energy_f32, "the floor is below any model");
    assert!(f.energy_f32 < 0.5 * f.energy_baseline, "f32 {} vs Gaussian {}", f.energy_f32, f.energy_baseline);
    assert!(f.energy_int8 < 0.5 * f.energy_baseline, "int8 {} vs Gaussian {}", f.energy_int8, f.energy_baseline);
}

#[test]
fn one_file_two_entries_sharing_weights_and_current() {
    let f = &figures().file;
    let dir = model_dir("planar");
    println!("planar: {:?}", f);
    assert_eq!(f.entries, ["forward", "inverse"]);
    // Per layer the file stores w (2), b (1), û (2), c, 1 + c and 1/(1 + c): 8 values, once for
    // both entries (the inverse's w, b, û are the forward's), plus the prior's two scalars.
    let report = PlanarReport::read(&dir).expect("train_report.json");
    let layers = report.options.config.layers;
    assert_eq!(report.params, 5 * layers);
    assert!(f.params >= 8 * layers && f.params <= 8 * layers + 4, "{} stored values for {layers} layers", f.params);
    assert!(f.flash_f32 < f.flash_f32_separate, "{} vs {}", f.flash_f32, f.flash_f32_separate);
    // The Newton inverses make `forward` far costlier than the generative direction.
    assert!(f.macs_forward > 5 * f.macs_inverse && f.macs_inverse > 0);
    assert!(f.arena_int8 >= f.lower_bound_int8 && f.arena_f32 >= f.lower_bound_f32);
    assert!(f.committed_f32_up_to_date, "model.mote is stale (mote zoo refresh planar)");
    assert!(f.committed_int8_up_to_date, "model.int8.mote is stale (mote zoo refresh planar)");
    for png in ["samples.png", "latent.png"] {
        let bytes = std::fs::read(dir.join(png)).unwrap_or_else(|_| panic!("{} missing", png));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}
