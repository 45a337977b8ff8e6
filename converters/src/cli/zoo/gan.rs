//! `mote zoo` for the DCGAN-style glyph GAN: train, convert the generator (f32 and int8,
//! batch-norm folded), measure sample quality on the runtime, write the PNG grid and the card.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, GanFigures};
use crate::report::bytes;
use crate::zoo::gan::{self as zg, GanReport, GanTrainOptions};
use crate::zoo::vae::glyphs::{grid_png, GLYPH_CLASSES, PIXELS};
use crate::zoo::vae::train::{BASELINE_SEED, FLOOR_SEED, LATENT_SEED, TEST_SEED, TRAIN_SEED};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The GAN family.
pub struct Gan;

impl ZooFamily for Gan {
    fn name(&self) -> &'static str {
        "gan"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = GanTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let r = zg::train_gan(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&r)?)?;
        println!(
            "trained in {:.0} s: energy distance, local features {:.4} (mean image {:.4}, independent pixels {:.4}, \
             floor {:.4}), pixels {:.4} (independent pixels {:.4}, floor {:.4})",
            r.train_seconds,
            r.energy_candle[1],
            r.energy_mean_image[1],
            r.energy_independent[1],
            r.energy_floor[1],
            r.energy_candle[0],
            r.energy_independent[0],
            r.energy_floor[0]
        );
        publish(out, &r)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &GanReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_gan(dir)?.summary())
    }
}

fn publish(dir: &Path, r: &GanReport) -> Result<()> {
    let onnx = dir.join("generator.onnx");
    for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
        std::fs::write(dir.join(file), crate::convert::convert(&onnx, &family::gan_options(dir, quant)?)?.bytes)?;
    }
    let f = family::evaluate_gan(dir)?;
    let k = 64 * PIXELS;
    grid_png(&dir.join("samples.png"), &[&f.test[..k], &f.samples_f32[..k], &f.samples_int8[..k]], 8, 2)?;
    std::fs::write(dir.join("card.md"), card(r, &f))?;
    print!("{}", super::table(&[("gan", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The model card.
pub fn card(r: &GanReport, f: &GanFigures) -> String {
    let o = &r.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(s, "# gan — DCGAN-style generator on 16×16 glyphs\n");
    let _ = writeln!(
        s,
        "A generative adversarial network trained from scratch in candle by `mote zoo train gan` (non-saturating \
         loss, Adam lr {} β₁ 0.5, {} steps of {} images, {:.0} s on the CPU). Only the generator is exported: \
         `generator.onnx` (`z [n,{l}]` → `image [n,1,16,16]`) with inference-form `BatchNormalization` nodes, which \
         the converter folds into the transposed convolution before each; it is the `forward` entry (a device \
         samples by feeding N(0, 1) latents, the firmware's default inputs).\n",
        o.lr,
        o.steps,
        o.batch_size,
        r.train_seconds,
        l = c.latent
    );
    let _ = writeln!(
        s,
        "Data: the procedural glyphs of the VAE card (`zoo::vae::glyphs`; {}), {} training images (seed \
         {TRAIN_SEED:#x}), {} held-out (seed {TEST_SEED:#x}, `data/test.npy`). Samples decode latents from \
         `mote::rng::Rng::gaussian` seed {LATENT_SEED:#x}; baselines use seed {BASELINE_SEED:#x}, the floor a \
         fresh draw (seed {FLOOR_SEED:#x}).\n",
        GLYPH_CLASSES.join(", "),
        o.train_images,
        o.test_images
    );
    let _ = writeln!(s, "## Architecture\n\n| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| generator | Linear ({l} → {f}) → ReLU → Reshape [{c2},4,4] → ConvTranspose 4×4/2 ({c2} → {c2}) → BatchNorm \
         → ReLU → ConvTranspose 4×4/2 ({c2} → {c1}) → BatchNorm → ReLU → Conv 3×3 ({c1} → 1) → Sigmoid; {} \
         parameters |",
        r.generator_params,
        l = c.latent,
        f = c.c2 * 16,
        c1 = c.c1,
        c2 = c.c2
    );
    let _ = writeln!(
        s,
        "| discriminator (not exported) | Conv 4×4/2 (1 → {c1}) → LeakyReLU 0.2 → Conv 4×4/2 ({c1} → {c2}) → \
         LeakyReLU 0.2 → Linear ({f} → 1); {} parameters |",
        r.discriminator_params,
        c1 = c.c1,
        c2 = c.c2,
        f = c.c2 * 16
    );
    let _ = writeln!(
        s,
        "| batch-norm | batch statistics in training; exported with population statistics re-estimated over 64 \
         generator batches after training |\n"
    );
    let _ = writeln!(
        s,
        "Loss curve (step, D loss, G loss): {}.\n",
        r.loss_curve
            .iter()
            .step_by(4)
            .chain(r.loss_curve.last())
            .map(|(s, d, g)| format!("{s}: {d:.2}/{g:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "## Sample quality and the runtime\n");
    let _ = writeln!(
        s,
        "Energy distance (Székely's E-statistic, lower is better) of {} samples to the {} held-out glyphs, in the \
         VAE card's two spaces: pixels, and local features (pixels plus products of adjacent pixels, \
         `glyphs::local_features`; pixel-space distances see little beyond per-pixel marginals). Host runtime, \
         batches of n = {}.\n",
        o.test_images, o.test_images, f.batch
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let e = |v: [f64; 2]| format!("{:.4} / {:.4}", v[1], v[0]);
    let rows: Vec<(&str, String)> = vec![
        ("parameters stored (generator, batch-norm folded)", f.params.to_string()),
        ("flash: f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        (
            "arena / lower bound: f32 · int8",
            format!(
                "{} / {} · {} / {}",
                bytes(f.arena_f32.0),
                bytes(f.arena_f32.1),
                bytes(f.arena_int8.0),
                bytes(f.arena_int8.1)
            ),
        ),
        ("MACs per call of n images (per image)", format!("{} ({})", f.macs, f.macs / f.batch.max(1) as u64)),
        ("int8 ops (batch-norm folded away)", f.ops.join(" → ")),
        ("energy distance, local features / pixels: candle samples", e(r.energy_candle)),
        ("  runtime f32 samples", e(f.energy_f32)),
        ("  runtime int8 samples", e(f.energy_int8)),
        ("  baseline: mean image", e(r.energy_mean_image)),
        ("  baseline: independently resampled pixels", e(r.energy_independent)),
        ("  baseline: uniform noise", e(r.energy_noise)),
        ("  fresh glyphs (floor)", e(r.energy_floor)),
        (
            "f32 vs tract · f32 vs candle · int8 vs f32, max-abs (golden)",
            format!("{:.1e} · {:.1e} · {:.1e}", f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs, f.int8_vs_f32_max_abs),
        ),
        (
            "committed model.mote / model.int8.mote equal a fresh conversion",
            format!("{} / {}", f.committed_up_to_date.0, f.committed_up_to_date.1),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let verdict = |e: f64, b: f64| if e < b { "below" } else { "above" };
    let _ = writeln!(
        s,
        "\nThe runtime samples sit {} the independent-pixel baseline in the local-feature space ({:.4} vs {:.4}) and \
         {} it in pixel space ({:.4} vs {:.4}), and far below the mean image and noise. By eye (`samples.png`) \
         they are stroke-like blobs with the data's ink density rather than clean rings, crosses or polygons: \
         {} steps on two CPU cores are short for adversarial training.",
        verdict(f.energy_f32[1], r.energy_independent[1]),
        f.energy_f32[1],
        r.energy_independent[1],
        verdict(f.energy_f32[0], r.energy_independent[0]),
        f.energy_f32[0],
        r.energy_independent[0],
        o.steps
    );
    let _ = writeln!(
        s,
        "\n![samples](samples.png)\n\n`samples.png`: 64 held-out glyphs | runtime samples, f32 | int8 (same \
         latents). `candle_samples.png`: candle's samples; `data/glyphs.png`: the first 64 test images.\n"
    );
    s
}
