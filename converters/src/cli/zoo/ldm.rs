//! `mote zoo` for `ldm`: train the latent denoiser on the glyph VAE's latents (`train`), distil
//! it into 4-, 2- and 1-step students (`distill`), convert the device file (the 4-step student
//! with the VAE's decoder as `decode`, f32 and int8), measure everything on the runtime, run it
//! on the QEMU Cortex-M4 when the toolchain is there, plot, and write the card.

use super::{print_rounds, DistillSettings, TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::ldm::{self as fl, LdmFigures, GUIDANCE_RUNS, QUALITY_RUNS};
use crate::family::m4::{self, M4Figures};
use crate::family::FamilyFigures;
use crate::zoo::diffusion::DistillReport;
use crate::zoo::ldm::card::write_ldm_card;
use crate::zoo::ldm::{self as zl, LatentGlyphs, LdmReport};
use crate::zoo::vae::glyphs::{grid_png, GLYPH_CLASSES};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The latent diffusion family.
pub struct Ldm;

impl ZooFamily for Ldm {
    fn name(&self) -> &'static str {
        "ldm"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let data = LatentGlyphs::load(&zl::locate_vae(out)?)?;
        let mut opts = zl::ldm_train_options(&data);
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let r = zl::train_ldm(out, &data, &opts)?;
        let t = &r.teacher;
        let energies: Vec<String> = t.energy_candle.iter().map(|(s, e)| format!("{s} steps {e:.4}")).collect();
        println!(
            "trained in {:.0} s: v-loss {:.4}; candle DDIM, decoded, energy distance (local features) {} (fresh glyphs {:.4})",
            t.train_seconds,
            t.final_train_loss,
            energies.join(", "),
            t.energy_floor
        );
        println!("next: `mote zoo distill ldm --to 1` distils the few-step students");
        // A retrained teacher invalidates students distilled from the previous one.
        for n in crate::zoo::diffusion::distill::EXPORTED {
            let _ = std::fs::remove_file(out.join(format!("student{n}.onnx")));
        }
        for f in ["distill_report.json", "model.mote", "model.int8.mote"] {
            let _ = std::fs::remove_file(out.join(f));
        }
        publish(out)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(fl::evaluate_ldm_student(dir)?.summary())
    }

    fn distill(&self, dir: &Path, settings: &DistillSettings) -> Result<()> {
        let data = LatentGlyphs::load(&zl::locate_vae(dir)?)?;
        let o = settings.apply(zl::ldm_distill_options(settings.to));
        let r = zl::distill_ldm(dir, &data, &o)?;
        print_rounds(&r);
        publish(dir)
    }
}

/// Converts the device file when there is a 4-step student, measures every file on the
/// runtime, runs the M4, plots and writes the card.
fn publish(dir: &Path) -> Result<()> {
    if dir.join("student4.onnx").exists() {
        for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
            let c = crate::convert::convert(&dir.join("student4.onnx"), &fl::ldm_options(dir, "student4", quant)?)?;
            std::fs::write(dir.join(file), &c.bytes)?;
        }
    }
    let f = fl::evaluate_ldm(dir)?;
    std::fs::write(dir.join("figures.json"), serde_json::to_string_pretty(&f)?)?;
    plots(dir, &f)?;
    let device = m4::refresh(dir, &fl::DEVICE_RUN, &|images| images.to_vec())?;
    let report = LdmReport::read(dir)?;
    let distilled = DistillReport::read(dir).ok();
    write_ldm_card(dir, &report, distilled.as_ref(), &card_section(dir, &f, device.as_ref()))?;
    print!("{}", quality_table(&f));
    print!("{}", super::table(&[("ldm", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// `samples.png` (unconditional, 32 per set), `classes.png` (guided ×3, one row per class, per
/// model) and `guidance.png` (the 4-step student per class at scales 0, 1, 3).
fn plots(dir: &Path, f: &LdmFigures) -> Result<()> {
    let p = &f.panels;
    for (file, sets) in [("samples.png", &p.unconditional), ("classes.png", &p.classes), ("guidance.png", &p.guidance)]
    {
        if !sets.is_empty() {
            let panels: Vec<&[f32]> = sets.iter().map(|(_, s)| s.as_slice()).collect();
            grid_png(&dir.join(file), &panels, 8, 2)?;
        }
    }
    Ok(())
}

fn labels(sets: &[(String, Vec<f32>)]) -> String {
    sets.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(" | ")
}

/// The sample-quality table as plain text (for the terminal).
fn quality_table(f: &LdmFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:>5} {:>5} {:>6} {:>13} {:>11} {:>9} {:>11}",
        "model", "prec", "meth", "steps", "denoise MACs", "decode MACs", "energy", "vs teacher"
    );
    for r in &f.quality {
        let _ = writeln!(
            s,
            "{:<9} {:>5} {:>5} {:>6} {:>13} {:>11} {:>9.4} {:>11.4}",
            r.model, r.precision, r.method, r.steps, r.macs_denoise, r.macs_decode, r.energy, r.vs_teacher
        );
    }
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "{} {} {} steps, guidance {}: class accuracy {:.1}%, energy {:.4}",
            g.model,
            g.precision,
            g.steps,
            g.scale,
            100.0 * g.accuracy,
            g.energy
        );
    }
    s
}

/// The measured verdicts.
fn verdicts(f: &LdmFigures) -> String {
    let e = |m: &str, p: &str, n: usize| f.row(m, p, n).map(|r| r.energy);
    let mut out = Vec::new();
    if let (Some(s4), Some(t), Some(t4)) =
        (e("student4", "f32", 4), e("teacher", "f32", f.timesteps), e("teacher", "f32", 4))
    {
        out.push(format!(
            "The 4-step student's energy distance is {:.1}% of the teacher's at {} DDIM steps and {:.1}% of the \
             undistilled teacher's at 4 steps.",
            100.0 * s4 / t,
            f.timesteps,
            100.0 * s4 / t4
        ));
    }
    if let Some(i) = &f.int8 {
        out.push(format!(
            "int8 against f32 for the 4-step student (same seeds): energy ratio {:.3}, decoded pixels differ by {:.4} \
             on average (at most {:.3}), latents by {:.3} (mean Euclidean distance); `tests/tests/ldm_zoo.rs` holds \
             int8 to an energy ratio within 1 ± 0.15 and a mean pixel difference below 0.02.",
            i.energy_ratio, i.pixel_mean_abs, i.pixel_max_abs, i.latent_distance
        ));
    }
    out.join(" ")
}

/// The card section the runtime measurements fill in.
fn card_section(dir: &Path, f: &LdmFigures, device: Option<&M4Figures>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh ldm` with `mote::diffusion::sample` on the host (scalar reference kernels), each \
         file converted with the VAE's decoder as its `decode` entry: {} runs of {} latents per row (run k seeded {} + k, \
         the same noise for every model), each decoded by the file's `decode` entry, against the {} held-out glyphs. \
         One metric: energy distance in local features (pixels and products of adjacent pixels, \
         `zoo::vae::glyphs::energy_distance_local`, lower is better; the VAE and GAN cards' metric). MACs per sample \
         are per decoded glyph: the denoiser's steps (one call per step; guidance doubles it) plus the decode.\n",
        QUALITY_RUNS,
        f.rows,
        crate::zoo::diffusion::train::SAMPLE_SEED,
        f.test_images
    );
    let _ = writeln!(
        s,
        "| model | precision | sampler | steps | MACs / sample: denoiser + decode | energy distance ↓ | mean latent distance \
         to the teacher's DDIM {} sample (same noise) |\n|---|---|---|---|---|---|---|",
        f.reference_steps
    );
    for r in &f.quality {
        // DDPM draws fresh noise at every step: no sample of it corresponds to a DDIM one.
        let stray = if r.method == "DDPM" { "— (stochastic)".to_string() } else { format!("{:.3}", r.vs_teacher) };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} + {} | {:.4} | {stray} |",
            r.model, r.precision, r.method, r.steps, r.macs_denoise, r.macs_decode, r.energy
        );
    }
    if let Some(b) = &f.baselines {
        let gan = b.gan.map_or("— (no models/gan)".to_string(), |g| format!("{g:.4}"));
        let rows = [
            ("fresh glyphs (the floor)", format!("{:.4}", b.floor)),
            (
                "the VAE's reconstructions decode(μ(x)) of fresh glyphs (the decoder's best)",
                format!("{:.4}", b.vae_reconstruction),
            ),
            ("the VAE's prior samples, z ~ N(0, I) decoded", format!("{:.4}", b.vae_prior)),
            ("a Gaussian fitted to the training latents, decoded", format!("{:.4}", b.latent_gaussian)),
            ("per-class Gaussians fitted to the latents, decoded", format!("{:.4}", b.class_gaussians)),
            ("the GAN (`models/gan`, its card's latents)", gan),
        ];
        for (what, v) in rows {
            let _ = writeln!(s, "| {what} | | | | | {v} | |");
        }
    }
    let _ = writeln!(s, "\n{}\n", verdicts(f));
    let _ = writeln!(
        s,
        "![samples](samples.png)\n\n`samples.png`, unconditional, left to right: {}.\n",
        labels(&f.panels.unconditional)
    );
    let _ = writeln!(s, "### Classifier-free guidance\n");
    let b = f.baselines.as_ref();
    let _ = writeln!(
        s,
        "{} runs of {} latents per class ({} glyphs), DDIM, `Condition::Guided` (scale 0 is the unconditional model, 1 the \
         conditional one). Class accuracy: the fraction that the pixel-space {}-nearest-neighbour classifier fitted on {} \
         real glyphs (`zoo::ldm::classify`) assigns to the class asked for. It classifies the held-out glyphs {:.1}% \
         right and the VAE's reconstructions of them {:.1}% (decoded glyphs are blurrier than real ones; guided \
         samples, pushed to the typical glyph of their class, can score higher); samples of per-class Gaussians fitted \
         to the latents score {:.1}%.\n",
        GUIDANCE_RUNS,
        f.rows,
        GUIDANCE_RUNS as usize * f.rows * GLYPH_CLASSES.len(),
        crate::zoo::ldm::classify::CLASSIFIER_K,
        crate::zoo::ldm::classify::CLASSIFIER_GLYPHS,
        100.0 * b.map_or(f64::NAN, |b| b.knn_real),
        100.0 * b.map_or(f64::NAN, |b| b.knn_reconstructed),
        100.0 * b.map_or(f64::NAN, |b| b.class_gaussians_accuracy)
    );
    let _ = writeln!(s, "| model | precision | steps | guidance scale | class accuracy | energy distance (all classes) |\n|---|---|---|---|---|---|");
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1}% | {:.4} |",
            g.model,
            g.precision,
            g.steps,
            g.scale,
            100.0 * g.accuracy,
            g.energy
        );
    }
    let _ = writeln!(
        s,
        "\n![classes](classes.png)\n\n`classes.png`: guided at scale 3, one row per class ({}), left to right: {}.\n",
        GLYPH_CLASSES.join(", "),
        labels(&f.panels.classes)
    );
    let _ = writeln!(
        s,
        "![guidance](guidance.png)\n\n`guidance.png`: the 4-step student, one row per class, left to right: {}.\n",
        labels(&f.panels.guidance)
    );
    files_section(&mut s, dir, f, device);
    s
}

/// Files, memory, parity and the Cortex-M4 run.
fn files_section(s: &mut String, dir: &Path, f: &LdmFigures, device: Option<&M4Figures>) {
    let _ = writeln!(s, "### Files, memory and parity\n");
    let _ = writeln!(
        s,
        "Every file converts with `--dim n={}` and `--entry decode=models/vae/decoder.onnx`; the committed device files are \
         `model.mote` and `model.int8.mote` (`mote convert student4.onnx --entry decode=../vae/decoder.onnx`; up to date \
         with a fresh conversion: {} / {}). int8 calibrates `forward` on latents noised at the file's own timesteps \
         (`calib/student4/`) and `decode` on N(0, 1) latents. The runtime's 4-step samples of `model.mote` match candle's \
         golden samples (`golden/student4.sample.npy`, `.guided.npy`, seed {}) to {:.1e}, and its `decode` entry decodes \
         them as the VAE's decoder does in tract to {:.1e}.\n",
        f.rows,
        f.committed_up_to_date.0,
        f.committed_up_to_date.1,
        crate::zoo::diffusion::train::GOLDEN_SEED,
        f.golden_samples_max_abs.0,
        f.golden_samples_max_abs.1
    );
    let _ = writeln!(s, "| file | steps | flash f32 / int8 | arena / lower bound f32 | arena / lower bound int8 | state | MACs / call: denoiser, decode | forward vs tract, vs candle | decode vs tract |\n|---|---|---|---|---|---|---|---|---|");
    for x in &f.files {
        let _ = writeln!(
            s,
            "| {} | {}, {} | {:.1e}, {:.1e} | {:.1e} |",
            x.file.cells(),
            x.macs_denoise_call,
            x.macs_decode_call,
            x.denoise_vs_tract,
            x.denoise_vs_candle,
            x.decode_vs_tract
        );
    }
    let _ = writeln!(s, "\n### On a Cortex-M4 (QEMU)\n");
    match device {
        None => {
            let _ = writeln!(s, "Not measured yet: install the firmware toolchain (`.ci/setup-toolchain.sh`) and run `mote zoo refresh ldm`.");
        }
        Some(m) => {
            let stale = m.staleness(dir, &fl::DEVICE_RUN);
            let _ = writeln!(
                s,
                "`{}`{stale}: one guided 4-step sample of {} latents ({} denoiser calls) takes {:.1} M instructions \
                 ({:.2} M per call), decoding them into {} glyphs {:.1} M; {}\n\n\
                 ![device](device.png)\n\n`device.png`: the {} glyphs the device decoded (class {}, {}).\n",
                m.command,
                f.rows,
                2 * fl::DEVICE_RUN.steps,
                m.sample_instructions / 1e6,
                m.forward_instructions / 1e6,
                f.rows,
                m.decode_instructions.unwrap_or(f64::NAN) / 1e6,
                m.footprint(),
                f.rows,
                fl::DEVICE_RUN.class,
                GLYPH_CLASSES.get(fl::DEVICE_RUN.class as usize).unwrap_or(&"?")
            );
        }
    }
}
