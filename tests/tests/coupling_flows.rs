//! Acceptance of the committed coupling flows (`models/nice`, `models/realnvp`): both
//! directions as two entries of one `.mote` sharing their weights, exact invertibility and
//! log-likelihood on the runtime (against the candle golden values committed by `mote zoo
//! train`), held-out NLL against a fitted Gaussian in f32 and int8, sample quality against
//! held-out data, and the committed files being current.

use mote_converters::array::Array;
use mote_converters::family::{evaluate_flow, FlowFigures};
use mote_converters::host;
use mote_converters::zoo::coupling::{CouplingKind, FlowReport};
use mote_tests::model_dir;
use std::sync::OnceLock;

const KINDS: [CouplingKind; 2] = [CouplingKind::Nice, CouplingKind::RealNvp];

/// int8 may cost at most this much held-out NLL (nats/dim) over f32.
const INT8_NLL_TOLERANCE: f64 = 0.05;

fn figures(kind: CouplingKind) -> &'static FlowFigures {
    static F: [OnceLock<FlowFigures>; 2] = [OnceLock::new(), OnceLock::new()];
    F[kind as usize].get_or_init(|| {
        let dir = model_dir(kind.name());
        let f = evaluate_flow(&dir, kind).unwrap_or_else(|e| panic!("evaluate {}: {e:#}", dir.display()));
        println!("{}: {f:#?}", kind.name());
        f
    })
}

#[test]
fn inverse_of_forward_reconstructs_the_data_in_f32() {
    for kind in KINDS {
        let f = figures(kind);
        println!(
            "{}: max |inverse(forward(x)) - x| f32 {:.2e}, int8 {:.2e}",
            kind.name(),
            f.invertibility_f32,
            f.invertibility_int8
        );
        assert!(f.test_points >= 1000, "{} test points", f.test_points);
        assert!(f.invertibility_f32 <= 1e-4, "{}: {}", kind.name(), f.invertibility_f32);
    }
}

#[test]
fn runtime_log_prob_matches_candle_and_tract() {
    for kind in KINDS {
        let f = figures(kind);
        println!(
            "{}: log_prob vs candle {:.2e} nats, z/samples vs candle {:.2e}, vs tract {:.2e}",
            kind.name(),
            f.file.log_prob_vs_candle_max_abs,
            f.file.latent_vs_candle_max_abs,
            f.file.f32_vs_tract_max_abs
        );
        assert!(f.file.log_prob_vs_candle_max_abs <= 1e-3, "{}: {}", kind.name(), f.file.log_prob_vs_candle_max_abs);
        assert!(f.file.latent_vs_candle_max_abs <= 1e-3, "{}: {}", kind.name(), f.file.latent_vs_candle_max_abs);
        assert!(f.file.f32_vs_tract_max_abs <= 1e-4, "{}: {}", kind.name(), f.file.f32_vs_tract_max_abs);
        // The committed file itself (not only a fresh conversion) on the golden batch.
        let dir = model_dir(kind.name());
        let bytes = std::fs::read(dir.join("model.mote")).expect("model.mote");
        let x = Array::read_npy(&dir.join("golden/x.npy")).expect("golden/x.npy");
        let want = Array::read_npy(&dir.join("golden/log_prob.npy")).expect("golden/log_prob.npy").to_f32();
        let got = host::run(&bytes, "forward", &[x]).expect("run forward").remove(1).to_f32();
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-3, "{}: committed model.mote log_prob vs golden {worst}", kind.name());
        // The candle NLL of the training report is what the runtime measures.
        let trained = FlowReport::read(&dir).expect("train_report.json").test_nll;
        assert!((trained - f.nll_f32).abs() <= 1e-3, "{}: candle {trained} vs f32 {}", kind.name(), f.nll_f32);
    }
}

#[test]
fn held_out_nll_beats_the_gaussian_in_f32_and_int8() {
    for kind in KINDS {
        let f = figures(kind);
        println!(
            "{}: test NLL nats/dim candle {:.4} f32 {:.4} int8 {:.4} Gaussian {:.4}",
            kind.name(),
            f.nll_candle,
            f.nll_f32,
            f.nll_int8,
            f.baseline_nll
        );
        assert!(f.nll_f32 < f.baseline_nll - 0.2, "{}: f32 {} vs Gaussian {}", kind.name(), f.nll_f32, f.baseline_nll);
        assert!(
            (f.nll_int8 - f.nll_f32).abs() <= INT8_NLL_TOLERANCE,
            "{}: int8 {} vs f32 {}",
            kind.name(),
            f.nll_int8,
            f.nll_f32
        );
        assert!(
            f.nll_int8 < f.baseline_nll - 0.2,
            "{}: int8 {} vs Gaussian {}",
            kind.name(),
            f.nll_int8,
            f.baseline_nll
        );
    }
}

#[test]
fn runtime_samples_are_closer_to_held_out_data_than_the_gaussian() {
    for kind in KINDS {
        let f = figures(kind);
        println!(
            "{}: energy distance f32 {:.5} int8 {:.5} Gaussian {:.5} floor {:.5}",
            kind.name(),
            f.energy_f32,
            f.energy_int8,
            f.energy_baseline,
            f.energy_floor
        );
        assert!(f.energy_floor < f.energy_f32, "{}: the floor is below any model", kind.name());
        assert!(
            f.energy_f32 < 0.5 * f.energy_baseline,
            "{}: f32 {} vs Gaussian {}",
            kind.name(),
            f.energy_f32,
            f.energy_baseline
        );
        assert!(
            f.energy_int8 < f.energy_baseline,
            "{}: int8 {} vs Gaussian {}",
            kind.name(),
            f.energy_int8,
            f.energy_baseline
        );
    }
}

#[test]
fn one_file_two_entries_sharing_weights_and_current() {
    for kind in KINDS {
        let f = &figures(kind).file;
        let dir = model_dir(kind.name());
        println!("{}: {:?}", kind.name(), f);
        assert_eq!(f.entries, ["forward", "inverse"], "{}", kind.name());
        // Shared coupling nets are stored once: well under two separate files.
        assert!(
            10 * f.flash_f32 < 6 * f.flash_f32_separate,
            "{}: {} vs {}",
            kind.name(),
            f.flash_f32,
            f.flash_f32_separate
        );
        // Every weight of both directions is a trained parameter, stored once (f32: 4 bytes each).
        let report = FlowReport::read(&dir).expect("train_report.json");
        assert!(
            f.params >= report.params && f.params <= report.params + 8,
            "{}: {} vs {}",
            kind.name(),
            f.params,
            report.params
        );
        assert!(f.params * 4 < f.flash_f32, "{}", kind.name());
        assert!(f.arena_int8 >= f.lower_bound_int8 && f.arena_f32 >= f.lower_bound_f32);
        assert!(f.macs_forward > 0 && f.macs_inverse > 0);
        assert!(f.committed_f32_up_to_date, "{}: model.mote is stale (mote zoo refresh {})", kind.name(), kind.name());
        assert!(
            f.committed_int8_up_to_date,
            "{}: model.int8.mote is stale (mote zoo refresh {})",
            kind.name(),
            kind.name()
        );
        for png in ["samples.png", "latent.png"] {
            let bytes = std::fs::read(dir.join(png)).unwrap_or_else(|_| panic!("{} missing", png));
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
        }
    }
}
