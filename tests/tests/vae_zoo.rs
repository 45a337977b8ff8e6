//! Acceptance of the committed glyph VAE (`models/vae`): decoder (`forward`) and encoder
//! (`encode`) as two entries of one `.mote`, parity with tract and with the candle golden
//! values committed by `mote zoo train vae` (`golden/`: the first 8 test images, candle's μ,
//! log σ², decode(μ), and decoded N(0, I) latents from `mote::rng::Rng` seed `LATENT_SEED`),
//! the test ELBO and reconstruction error in f32 and int8 against the baselines, sample quality
//! against held-out glyphs, and the committed files being current.

use mote_converters::array::Array;
use mote_converters::family::{evaluate_vae, VaeFigures};
use mote_converters::host;
use mote_tests::model_dir;
use std::sync::OnceLock;

/// int8 may cost at most this much test −ELBO (nats/image) over f32.
const INT8_ELBO_TOLERANCE: f64 = 1.0;
/// int8 reconstruction MSE may exceed f32's by at most this fraction.
const INT8_MSE_TOLERANCE: f64 = 0.05;

fn figures() -> &'static VaeFigures {
    static F: OnceLock<VaeFigures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = model_dir("vae");
        let f = evaluate_vae(&dir).unwrap_or_else(|e| panic!("evaluate {}: {e:#}", dir.display()));
        println!("{f:#?}");
        f
    })
}

#[test]
fn runtime_matches_tract_and_the_candle_golden_values() {
    let f = figures();
    println!(
        "f32 vs tract {:.2e}; vs candle: mu/logvar {:.2e}, images {:.2e}",
        f.f32_vs_tract_max_abs, f.encode_vs_candle_max_abs, f.decode_vs_candle_max_abs
    );
    assert!(f.f32_vs_tract_max_abs <= 1e-4, "{}", f.f32_vs_tract_max_abs);
    assert!(f.encode_vs_candle_max_abs <= 1e-4, "{}", f.encode_vs_candle_max_abs);
    assert!(f.decode_vs_candle_max_abs <= 1e-4, "{}", f.decode_vs_candle_max_abs);
    // The committed file itself (not only a fresh conversion) on the golden batch.
    let dir = model_dir("vae");
    let bytes = std::fs::read(dir.join("model.mote")).expect("model.mote");
    let golden = |n: &str| Array::read_npy(&dir.join("golden").join(n)).expect(n);
    let recon = host::run(&bytes, "forward", &[golden("mu.npy")]).expect("forward").remove(0);
    assert_eq!(recon.shape, [8, 1, 16, 16]);
    let want = golden("recon.npy").to_f32();
    let worst = recon.to_f32().iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-4, "committed model.mote decode(mu) vs golden {worst}");
    let enc = host::run(&bytes, "encode", &[golden("image.npy")]).expect("encode");
    let worst = enc[1].to_f32().iter().zip(&golden("logvar.npy").to_f32()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-4, "committed model.mote logvar vs golden {worst}");
}

#[test]
fn reconstruction_error_matches_candle_and_int8_stays_close() {
    let f = figures();
    let (c, r) = (&f.report.candle, &f.report);
    println!(
        "recon MSE/pixel: candle {:.6} f32 {:.6} int8 {:.6} mean image {:.6}; int8 vs f32 golden images {:.2e}",
        c.recon_mse, f.f32.recon_mse, f.int8.recon_mse, r.baseline_mse, f.int8_vs_f32_max_abs
    );
    assert!(f.test_images >= 512, "{} test images", f.test_images);
    assert!((f.f32.recon_mse - c.recon_mse).abs() <= 1e-6, "f32 {} vs candle {}", f.f32.recon_mse, c.recon_mse);
    assert!(f.f32.recon_mse < 0.5 * r.baseline_mse, "f32 {} vs mean image {}", f.f32.recon_mse, r.baseline_mse);
    assert!(
        (f.int8.recon_mse - f.f32.recon_mse).abs() <= INT8_MSE_TOLERANCE * f.f32.recon_mse,
        "int8 {} vs f32 {}",
        f.int8.recon_mse,
        f.f32.recon_mse
    );
    assert!(f.int8_vs_f32_max_abs <= 0.05, "int8 vs f32 images {}", f.int8_vs_f32_max_abs);
}

#[test]
fn test_elbo_beats_the_mean_image_bernoulli_in_f32_and_int8() {
    let f = figures();
    let r = &f.report;
    println!(
        "-ELBO nats/image: candle {:.3} f32 {:.3} int8 {:.3} baseline {:.3} (KL f32 {:.2})",
        r.candle.neg_elbo, f.f32.neg_elbo, f.int8.neg_elbo, r.baseline_nll, f.f32.kl
    );
    // Same ε, same clamp: the runtime reproduces candle's number.
    assert!(
        (f.f32.neg_elbo - r.candle.neg_elbo).abs() <= 0.01,
        "f32 {} vs candle {}",
        f.f32.neg_elbo,
        r.candle.neg_elbo
    );
    assert!(f.f32.neg_elbo < r.baseline_nll - 10.0, "f32 {} vs baseline {}", f.f32.neg_elbo, r.baseline_nll);
    assert!(
        (f.int8.neg_elbo - f.f32.neg_elbo).abs() <= INT8_ELBO_TOLERANCE,
        "int8 {} vs f32 {}",
        f.int8.neg_elbo,
        f.f32.neg_elbo
    );
    assert!(f.int8.neg_elbo < r.baseline_nll - 10.0, "int8 {} vs baseline {}", f.int8.neg_elbo, r.baseline_nll);
    assert!(f.f32.kl > 1.0, "the latents carry information (KL {})", f.f32.kl);
}

#[test]
fn runtime_samples_are_closer_to_held_out_glyphs_than_the_baselines() {
    let f = figures();
    let r = &f.report;
    println!(
        "energy distance (local features): f32 {:.4} int8 {:.4} candle {:.4}; mean image {:.4}, independent pixels \
         {:.4}, noise {:.4}, floor {:.4}",
        f.f32.energy_local,
        f.int8.energy_local,
        r.candle.energy_local,
        r.energy_mean_image[1],
        r.energy_independent[1],
        r.energy_noise[1],
        r.energy_floor[1]
    );
    assert!((f.f32.energy_local - r.candle.energy_local).abs() <= 1e-3);
    for (name, e) in [("f32", f.f32.energy_local), ("int8", f.int8.energy_local)] {
        assert!(r.energy_floor[1] < e, "{name}: the floor is below any model");
        assert!(e < 0.5 * r.energy_mean_image[1], "{name}: {e} vs mean image {}", r.energy_mean_image[1]);
        assert!(e < 0.5 * r.energy_noise[1], "{name}: {e} vs noise {}", r.energy_noise[1]);
    }
}

#[test]
fn one_file_two_entries_and_current() {
    let f = figures();
    let dir = model_dir("vae");
    println!(
        "params {}, flash f32 {} int8 {}, arena/lower bound f32 {}/{} int8 {}/{}, MACs decode {} encode {} per {} images",
        f.params,
        f.flash_f32,
        f.flash_int8,
        f.arena_f32,
        f.lower_bound_f32,
        f.arena_int8,
        f.lower_bound_int8,
        f.macs_decode,
        f.macs_encode,
        f.batch
    );
    assert_eq!(f.entries, ["forward", "encode"]);
    assert_eq!(f.params, f.report.params, "every stored weight is a trained parameter, stored once");
    assert!(f.flash_int8 * 2 < f.flash_f32);
    assert!(f.arena_int8 >= f.lower_bound_int8 && f.arena_f32 >= f.lower_bound_f32);
    assert!(f.macs_decode > 0 && f.macs_encode > 0);
    assert!(f.committed_f32_up_to_date, "model.mote is stale (mote zoo refresh vae)");
    assert!(f.committed_int8_up_to_date, "model.int8.mote is stale (mote zoo refresh vae)");
    for png in ["samples.png", "reconstructions.png", "data/glyphs.png"] {
        let bytes = std::fs::read(dir.join(png)).unwrap_or_else(|_| panic!("{png} missing"));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
    }
}
