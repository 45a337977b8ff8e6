//! `mote zoo` for the glyph VAE: train, convert decoder (`forward`) and encoder (`encode`) into
//! one `.mote` (f32 and int8), measure on the runtime, write the PNG grids and the card.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, VaeFigures};
use crate::report::bytes;
use crate::zoo::vae::glyphs::{grid_png, PIXELS};
use crate::zoo::vae::{self as zv, VaeReport, VaeTrainOptions};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The VAE family.
pub struct Vae;

impl ZooFamily for Vae {
    fn name(&self) -> &'static str {
        "vae"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = VaeTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let r = zv::train_vae(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&r)?)?;
        println!(
            "trained in {:.0} s: test -ELBO {:.2} nats/image (baseline {:.2}); recon MSE {:.5} (mean image {:.5}); \
             energy distance, local features {:.4} (mean image {:.4}, independent pixels {:.4}, floor {:.4}), \
             pixels {:.4} (mean image {:.4}, independent pixels {:.4}, floor {:.4})",
            r.train_seconds,
            r.candle.neg_elbo,
            r.baseline_nll,
            r.candle.recon_mse,
            r.baseline_mse,
            r.candle.energy_local,
            r.energy_mean_image[1],
            r.energy_independent[1],
            r.energy_floor[1],
            r.candle.energy,
            r.energy_mean_image[0],
            r.energy_independent[0],
            r.energy_floor[0]
        );
        publish(out, &r)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &VaeReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_vae(dir)?.summary())
    }
}

/// Converts (f32 and int8), measures on the runtime, writes the grids and the card.
fn publish(dir: &Path, r: &VaeReport) -> Result<()> {
    let dec = dir.join("decoder.onnx");
    for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
        let converted = crate::convert::convert(&dec, &family::vae_options(dir, quant)?)?;
        std::fs::write(dir.join(file), &converted.bytes)?;
    }
    let f = family::evaluate_vae(dir)?;
    plots(dir, &f)?;
    zv::write_vae_card(dir, r, &card_section(&f))?;
    print!("{}", super::table(&[("vae", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// `samples.png` (64 held-out glyphs | f32 runtime samples | int8 runtime samples) and
/// `reconstructions.png` (32 held-out glyphs | f32 runtime decode(μ) | int8).
fn plots(dir: &Path, f: &VaeFigures) -> Result<()> {
    let k = 64 * PIXELS;
    grid_png(&dir.join("samples.png"), &[&f.test[..k], &f.samples_f32[..k], &f.samples_int8[..k]], 8, 2)?;
    let k = 32 * PIXELS;
    grid_png(&dir.join("reconstructions.png"), &[&f.test[..k], &f.recon_f32[..k], &f.recon_int8[..k]], 8, 2)
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &VaeFigures) -> String {
    let r = &f.report;
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh vae` / `mote zoo report` (host runtime, scalar reference kernels) on the \
         {} held-out images of `data/test.npy`, in batches of n = {}. Entries of `model.mote`: {}. Convolutions \
         run in f32 (weights f16 in the int8 file); the dense layers are int8 MatMuls in the int8 file.\n",
        f.test_images,
        f.batch,
        f.entries.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let per = |m: u64| m / f.batch.max(1) as u64;
    let energies = |c: f64, a: f64, b: f64, i: usize| {
        format!(
            "{c:.4} / {a:.4} / {b:.4} · {:.4} / {:.4} / {:.4} / {:.4}",
            r.energy_mean_image[i], r.energy_independent[i], r.energy_noise[i], r.energy_floor[i]
        )
    };
    let rows: [(&str, String); 12] = [
        ("parameters (both entries)", f.params.to_string()),
        ("flash: f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        (
            "arena / lower bound: f32 / int8 (peak over entries)",
            format!(
                "{} / {} · {} / {}",
                bytes(f.arena_f32),
                bytes(f.lower_bound_f32),
                bytes(f.arena_int8),
                bytes(f.lower_bound_int8)
            ),
        ),
        (
            "MACs per call of n images: forward (decode) / encode (per image)",
            format!("{} / {} ({} / {})", f.macs_decode, f.macs_encode, per(f.macs_decode), per(f.macs_encode)),
        ),
        (
            "test −ELBO nats/image: candle / f32 / int8 / baseline (mean-image Bernoulli)",
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                r.candle.neg_elbo, f.f32.neg_elbo, f.int8.neg_elbo, r.baseline_nll
            ),
        ),
        ("  of which KL: candle / f32 / int8", format!("{:.2} / {:.2} / {:.2}", r.candle.kl, f.f32.kl, f.int8.kl)),
        (
            "reconstruction MSE per pixel: candle / f32 / int8 / mean image",
            format!(
                "{:.5} / {:.5} / {:.5} / {:.5}",
                r.candle.recon_mse, f.f32.recon_mse, f.int8.recon_mse, r.baseline_mse
            ),
        ),
        (
            "energy distance to held-out, local features: candle / f32 / int8 samples · mean image / independent \
             pixels / noise / fresh glyphs (floor)",
            energies(r.candle.energy_local, f.f32.energy_local, f.int8.energy_local, 1),
        ),
        ("energy distance to held-out, pixels: the same", energies(r.candle.energy, f.f32.energy, f.int8.energy, 0)),
        (
            "f32 vs candle, max-abs (golden): μ, log σ² / images",
            format!("{:.1e} / {:.1e}", f.encode_vs_candle_max_abs, f.decode_vs_candle_max_abs),
        ),
        (
            "f32 .mote vs tract (golden, both entries) · int8 vs f32 images, max-abs",
            format!("{:.1e} · {:.1e}", f.f32_vs_tract_max_abs, f.int8_vs_f32_max_abs),
        ),
        (
            "committed model.mote / model.int8.mote equal a fresh conversion",
            format!("{} / {}", f.committed_f32_up_to_date, f.committed_int8_up_to_date),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\nThe int8 file calibrates `forward` from `calib/` (prior latents and posterior samples of training \
         images) and `encode` from the converter's default for extra entries (N(0, 1) inputs, not images).\n"
    );
    let _ = writeln!(
        s,
        "![samples](samples.png)\n\n`samples.png`: 64 held-out glyphs | decoded N(0, I) latents on the runtime, \
         f32 | int8 (the same latents).\n\n![reconstructions](reconstructions.png)\n\n`reconstructions.png`: 32 \
         held-out glyphs | decode(μ(x)) on the runtime, f32 | int8. `data/glyphs.png`: the first 64 test images; \
         `candle_samples.png`: candle's samples of the same latents.\n"
    );
    s
}
