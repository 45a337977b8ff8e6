//! `mote zoo` for Glow: train, convert both directions into one `.mote` (f32 and int8),
//! measure on the runtime, plot, write the card.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, GlowFigures};
use crate::report::bytes;
use crate::zoo::glow::data::{bits_per_dim, to_pixels};
use crate::zoo::glow::train::BASELINE_SEED;
use crate::zoo::glow::{self as zg, GlowReport, GlowTrainOptions};
use crate::zoo::vae::glyphs::grid_png;
use crate::zoo::vae::PIXELS;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The Glow family.
pub struct Glow;

impl ZooFamily for Glow {
    fn name(&self) -> &'static str {
        "glow"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = GlowTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = zg::train_glow(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: test NLL {:.4} nats/dim (Gaussian {:.4}); energy distance (local features) {:.4} \
             (Gaussian {:.4}, floor {:.4})",
            report.train_seconds,
            report.test_nll,
            report.baseline_nll,
            report.energy_candle[1],
            report.energy_gaussian[1],
            report.energy_floor[1]
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &GlowReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_glow(dir)?.summary())
    }
}

/// Converts both directions (f32 and int8), measures them on the runtime, plots, writes the card.
fn publish(dir: &Path, r: &GlowReport) -> Result<()> {
    let fwd = dir.join("forward.onnx");
    for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
        let converted = crate::convert::convert(&fwd, &family::glow_options(dir, quant)?)?;
        std::fs::write(dir.join(file), &converted.bytes)?;
    }
    let f = family::evaluate_glow(dir)?;
    plots(dir, &f)?;
    let mut section = card_section(&f);
    section.push_str(&m4_section(dir, &f)?);
    zg::write_glow_card(dir, r, &section)?;
    print!("{}", super::table(&[("glow", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// Images per panel of `samples.png`.
const GRID: usize = 32;

/// `samples.png`: held-out glyphs | f32 runtime samples | int8 runtime samples | Gaussian
/// baseline samples (the first [`GRID`] of each, 8 per row).
fn plots(dir: &Path, f: &GlowFigures) -> Result<()> {
    let gauss = to_pixels(&f.report.options.gaussian_baseline()?.sample(GRID, BASELINE_SEED));
    let k = GRID * PIXELS;
    let panels: [&[f32]; 4] = [&f.test_pixels[..k], &f.samples_f32[..k], &f.samples_int8[..k], &gauss];
    grid_png(&dir.join("samples.png"), &panels, 8, 2)
}

/// The Cortex-M4 paragraph of the card (empty without `m4.json`).
fn m4_section(dir: &Path, f: &GlowFigures) -> Result<String> {
    let Some((fwd, inv, rows)) = super::autoregressive::m4_record(dir)? else { return Ok(String::new()) };
    let per = |v: f64| v / rows / 1e6;
    Ok(format!(
        "On the Cortex-M4 (`mote flash --board mps2-an386 {d}/model.int8.mote -i {d}/golden/x.npy`, QEMU, int8 \
         file, size build, outputs bit-exact with the host; figures recorded in `m4.json`): {:.1} M instructions \
         per image for `forward` and {:.1} M for `inverse` ({:.0} M / {:.0} M per call of {rows} images), about \
         {:.0} instructions per MAC (all ops; the convolutions are scalar f32 kernels).\n",
        per(fwd),
        per(inv),
        fwd / 1e6,
        inv / 1e6,
        fwd / f.file.macs_forward.max(1) as f64,
        d = dir.display()
    ))
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &GlowFigures) -> String {
    let rep = &f.report;
    let file = &f.file;
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh glow` / `mote zoo report` (host runtime, scalar reference kernels) on the \
         {} held-out images, in batches of n = {}. Samples are `inverse` of latents drawn by \
         `mote::rng::Rng::gaussian`. Entries of `model.mote`: {}. Actnorm runs as per-channel `Mul` + `Add` \
         (inverse `Sub` + `Div`), the 1×1 convolutions and the coupling nets as the runtime's `Conv` op (f32 \
         math; the ONNX metadata `mote.pointwise_conv = conv` keeps the 1×1 ones from the int8 patch-MatMul \
         lowering), squeeze as Reshape → Transpose (rank 6) → Reshape, the split as `Slice`, log-dets as \
         `ReduceSum`. The graphs hold no MatMul, so the int8 file quantises no activation: it differs from the \
         f32 file by its f16 convolution weights.\n",
        f.test_images,
        file.batch,
        file.entries.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let per = |m: u64| m / file.batch.max(1) as u64;
    let bits = rep.options.bits;
    let rows: [(&str, String); 15] = [
        (
            "parameters stored in model.mote (shared weights once; 1×1 convs as W and W⁻¹) / trainable",
            format!("{} / {}", file.params, rep.params),
        ),
        (
            "flash: f32 / int8 / f32 as two separate files",
            format!(
                "{} / {} / {}",
                bytes(file.flash_f32),
                bytes(file.flash_int8),
                bytes(file.flash_f32_separate)
            ),
        ),
        (
            "arena / lower bound / without in-place ops, f32 (peak over entries)",
            format!(
                "{} / {} / {}",
                bytes(file.arena_f32),
                bytes(file.lower_bound_f32),
                bytes(f.arena_f32_without_in_place)
            ),
        ),
        (
            "arena / lower bound / without in-place ops, int8",
            format!(
                "{} / {} / {}",
                bytes(file.arena_int8),
                bytes(file.lower_bound_int8),
                bytes(f.arena_int8_without_in_place)
            ),
        ),
        (
            "MACs per call of n images: forward / inverse (per image)",
            format!(
                "{} / {} ({} / {})",
                file.macs_forward,
                file.macs_inverse,
                per(file.macs_forward),
                per(file.macs_inverse)
            ),
        ),
        (
            "test NLL nats/dim: candle / f32 / int8 / Gaussian baseline",
            format!("{:.4} / {:.4} / {:.4} / {:.4}", f.nll_candle, f.nll_f32, f.nll_int8, f.baseline_nll),
        ),
        (
            "the same in bits/dim of the quantised images",
            format!(
                "{:.3} / {:.3} / {:.3} / {:.3}",
                bits_per_dim(f.nll_candle, bits),
                bits_per_dim(f.nll_f32, bits),
                bits_per_dim(f.nll_int8, bits),
                bits_per_dim(f.baseline_nll, bits)
            ),
        ),
        (
            "energy distance to held-out, local features: f32 / int8 samples · Gaussian samples / independent pixels / fresh glyphs (floor)",
            format!(
                "{:.4} / {:.4} · {:.4} / {:.4} / {:.4}",
                f.energy_f32[1],
                f.energy_int8[1],
                rep.energy_gaussian[1],
                rep.energy_independent[1],
                rep.energy_floor[1]
            ),
        ),
        (
            "energy distance to held-out, pixels: the same",
            format!(
                "{:.4} / {:.4} · {:.4} / {:.4} / {:.4}",
                f.energy_f32[0],
                f.energy_int8[0],
                rep.energy_gaussian[0],
                rep.energy_independent[0],
                rep.energy_floor[0]
            ),
        ),
        (
            "precision / recall (k-NN balls in pixels): f32 / int8 samples · Gaussian samples · fresh glyphs (ceiling)",
            format!(
                "{:.3} / {:.3} · {:.3} / {:.3} · {:.3} / {:.3} · {:.3} / {:.3}",
                f.pr_f32[0],
                f.pr_f32[1],
                f.pr_int8[0],
                f.pr_int8[1],
                rep.pr_gaussian[0],
                rep.pr_gaussian[1],
                rep.pr_floor[0],
                rep.pr_floor[1]
            ),
        ),
        (
            "max abs inverse(forward(x)) − x: f32 · int8 max / mean",
            format!(
                "{:.1e} · {:.1e} / {:.1e}",
                f.invertibility_f32, f.invertibility_int8, f.invertibility_int8_mean
            ),
        ),
        (
            "max abs W·W⁻¹ − I over the stored 1×1 convs: f32 file / int8 file (f16 weights)",
            format!("{:.1e} / {:.1e} ({} pairs)", f.invconv_identity_f32, f.invconv_identity_int8, f.invconv_pairs),
        ),
        (
            "f32 log_prob vs candle, max-abs nats per image (golden)",
            format!("{:.1e}", file.log_prob_vs_candle_max_abs),
        ),
        (
            "f32 z and samples vs candle · f32 .mote vs tract (both entries), max-abs (golden)",
            format!("{:.1e} · {:.1e}", file.latent_vs_candle_max_abs, file.f32_vs_tract_max_abs),
        ),
        (
            "committed model.mote / model.int8.mote equal a fresh conversion",
            format!("{} / {}", file.committed_f32_up_to_date, file.committed_int8_up_to_date),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\n![samples](samples.png)\n\n`samples.png`: {GRID} held-out glyphs | f32 runtime samples | int8 runtime \
         samples (the same latents) | samples of the Gaussian baseline.\n"
    );
    s
}
