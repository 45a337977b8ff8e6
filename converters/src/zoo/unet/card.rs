//! The `ddpm` model card (`card.md`): data, architecture, training and the candle-side figures
//! (sample quality, guidance, baselines), with the runtime section (measured by the CLI)
//! appended.
//!
//! ```no_run
//! use mote_converters::zoo::unet::{card::write_card, train::TeacherReport};
//! let dir = std::path::Path::new("models/ddpm");
//! write_card(dir, &TeacherReport::read(dir)?, None, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::evaluate::CandleFigures;
use super::train::TeacherReport;
use crate::zoo::diffusion::card::{grid_sentence, student_steps};
use crate::zoo::diffusion::DistillReport;
use crate::zoo::vae::glyphs::GLYPH_CLASSES;
use crate::zoo::vae::train::{FLOOR_SEED, TEST_SEED, TRAIN_SEED};

fn architecture(s: &mut String, t: &TeacherReport) {
    let o = &t.options;
    let c = &o.config;
    let [c0, c1, c2] = c.channels;
    let _ = writeln!(s, "## Model\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| schedule | cosine (Nichol & Dhariwal, s = 0.008), T = {} discrete steps, ᾱ_{{T−1}} ≈ 0 (`zoo::diffusion::Schedule::cosine`, shared with `ddpm2d`) |",
        c.timesteps
    );
    let _ = writeln!(s, "| parameterisation | v-prediction: v = α·ε − σ·x₀, x̂₀ = α·x_t − σ·v̂, ε̂ = σ·x_t + α·v̂ |");
    let _ = writeln!(
        s,
        "| conditioning | fixed sinusoidal table `[T, {}]` gathered by `t` → Linear {} → SiLU → Linear {}, plus a learned class embedding `[{}, {}]` (id {} = null class); SiLU of the sum is projected per channel into every residual block |",
        c.time_features, c.embed, c.embed, c.classes + 1, c.embed, c.null_class()
    );
    let _ = writeln!(
        s,
        "| UNet | Conv3×3 1→{c0} @16×16 · Res {c0}→{c0} · Conv3×3/2 · Res {c0}→{c1} @8×8 · Conv3×3/2 · Res {c1}→{c2} @4×4 · self-attention ({} heads over 16 pixels) · Up×2 + Conv3×3 {c2}→{c1} · concat skip · Res {}→{c1} @8×8 · Up×2 + Conv3×3 {c1}→{c0} · concat skip · Res {}→{c0} @16×16 · GroupNorm → SiLU → Conv3×3 {c0}→1 |",
        c.heads,
        2 * c1,
        2 * c0
    );
    let _ = writeln!(
        s,
        "| residual block | GroupNorm({} groups) → SiLU → Conv3×3 (+ embedding projection per channel) → GroupNorm → SiLU → Conv3×3, + skip (1×1 conv when the width changes) |",
        c.groups
    );
    let _ = writeln!(s, "| trainable parameters | {} |", t.params);
    let _ = writeln!(
        s,
        "| ONNX | `teacher.onnx`, opset 21: `x [n,1,16,16]` f32, `t [n]` int64, `class [n]` int64 → `v [n,1,16,16]`; `GroupNormalization` with per-channel scale and bias, SiLU as `Sigmoid`·`Mul`, nearest `Resize` (asymmetric, floor), attention spelled out as MatMul/Softmax; metadata `mote.diffusion.alpha_bar`, `prediction = v`, `null_class = {}`, and `mote.pointwise_conv = conv` (the 1×1 skips stay `Conv` ops) |\n",
        c.null_class()
    );
}

fn training(s: &mut String, t: &TeacherReport) {
    let o = &t.options;
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW (lr {:.0e}, {} warm-up steps, cosine decay to 10%), {} steps of {} images, label dropout {} (the \
         null class trains the unconditional model for classifier-free guidance), EMA of the weights with decay {} \
         (exported), seed {}. Wall time {:.0} s for the loop ({:.2} s per step, {} candle thread{}), on two CPU \
         cores shared with other training jobs: the step budget was set to stay under ~15 minutes there.\n",
        o.lr,
        o.warmup,
        o.steps,
        o.batch_size,
        o.label_dropout,
        o.ema,
        o.seed,
        t.train_seconds,
        t.seconds_per_step,
        t.threads,
        if t.threads == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        s,
        "The training graph runs the same layers as the export through candle custom ops with hand-written \
         backward passes (`zoo::unet::fused`: GroupNorm and SiLU in one pass each; `zoo::unet::im2col`: \
         convolution as im2col + one GEMM, its input gradient by col2im, nearest ×2 upsampling), each checked \
         against candle's composed ops and finite differences in the unit tests. On these busy cores a \
         batch-64 step took about 2 s with candle's own ops (two threads); one thread was faster than two \
         once the kernels were fused.\n"
    );
    let curve: Vec<String> = t.loss_curve.iter().step_by(4).map(|(k, l)| format!("{k}: {l:.4}")).collect();
    let _ = writeln!(s, "Smoothed v-loss (step: loss): {}; final {:.4}.\n", curve.join(", "), t.final_train_loss);
}

fn quality(s: &mut String, t: &TeacherReport, f: &CandleFigures) {
    let o = &t.options;
    let _ = writeln!(s, "## Sample quality (candle)\n");
    let _ = writeln!(
        s,
        "Energy distance (Székely's E-statistic, lower is better) of {} unconditional samples to {} held-out \
         glyphs, in pixels and in the VAE/GAN cards' local features (pixels plus products of adjacent pixels, \
         `glyphs::local_features`). Sample k starts from `mote::rng::Rng` noise of seed 0x5a3e + k (what the \
         runtime draws for that seed). DDPM: ancestral sampling with the posterior variance.\n",
        o.eval.samples, o.eval.samples
    );
    let _ = writeln!(s, "| sampler | steps | MACs / sample | energy, local features ↓ | energy, pixels ↓ | candle time |\n|---|---|---|---|---|---|");
    let macs = t.macs_per_call;
    for r in &f.quality {
        let m = macs.map_or("–".to_string(), |m| (m * r.steps as u64).to_string());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {:.4} | {:.0} s |",
            r.method, r.steps, m, r.energy[1], r.energy[0], r.seconds
        );
    }
    let b = &f.baselines;
    for (name, e) in [
        ("fresh glyphs (floor)", b.floor),
        ("independently resampled pixels", b.independent_pixels),
        ("mean image", b.mean_image),
        ("uniform noise", b.noise),
    ] {
        let _ = writeln!(s, "| baseline: {name} | | | {:.4} | {:.4} | |", e[1], e[0]);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Classifier-free guidance (candle)\n");
    let _ = writeln!(
        s,
        "{} samples per class and row (`Condition::Guided`, DDIM; scale 0 is the unconditional model, 1 the \
         conditional one). Class accuracy: the fraction that a multinomial logistic regression on \
         translation-invariant features (the normalised autocorrelation of the image up to offset 7, its energy \
         and the total ink; `zoo::unet::classifier`), fitted on the training glyphs, assigns to the class asked \
         for. It classifies the held-out glyphs {:.1}% right; chance is {:.1}%.\n",
        o.eval.guided_per_class,
        100.0 * f.classifier_accuracy_real,
        100.0 / o.config.classes as f64
    );
    let _ =
        writeln!(s, "| DDIM steps | guidance scale | class accuracy ↑ | energy, local / pixels |\n|---|---|---|---|");
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1}% | {:.4} / {:.4} |",
            g.steps,
            g.scale,
            100.0 * g.accuracy,
            g.energy[1],
            g.energy[0]
        );
    }
    let _ = writeln!(s);
}

/// Local-feature energies of DDIM at 64 and at 4 steps, if measured.
fn f_rows(f: &CandleFigures) -> Option<(f64, f64)> {
    Some((f.row("DDIM", 64)?.energy[1], f.row("DDIM", 4)?.energy[1]))
}

fn few_steps(s: &mut String, t: &TeacherReport, distilled: Option<&DistillReport>) {
    let _ = writeln!(s, "## Few steps\n");
    if let Some((many, four)) = f_rows(&t.candle) {
        let _ = writeln!(
            s,
            "Sampled with 4 DDIM steps, the device budget, the teacher's energy distance is {:.1}× its value at 64 \
             steps ({four:.4} vs {many:.4}): few-step samples are blurrier and lose strokes (`samples.png`).\n",
            four / many
        );
    }
    let Some(d) = distilled else {
        let _ = writeln!(s, "Not distilled yet (`mote zoo distill ddpm --to 1`).\n");
        return;
    };
    let o = &d.options;
    let _ = writeln!(
        s,
        "`mote zoo distill ddpm` distils the teacher progressively (Salimans & Ho): starting from {} DDIM steps, \
         each round trains a student initialised from its teacher to take two teacher steps in one \
         (`zoo::diffusion::distill::distillation_target`) on batches of {} noised training glyphs at learning rate \
         {:e} (label dropout {}, weights averaged with decay {}). Energy distance in local features of {} candle \
         samples (unconditional, the evaluation's seeds), each student against its own teacher (the trained model for the first round, then the previous round's student) at the student's step count:\n",
        o.from_steps, o.batch_size, o.lr, o.label_dropout, o.ema, t.options.eval.samples
    );
    let _ = writeln!(
        s,
        "| student steps | student | its teacher at the same steps | batches | distillation loss first → last | seconds |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in &d.rounds {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {} | {:.4} → {:.4} | {:.0} |",
            student_steps(r),
            r.energy_candle,
            r.energy_teacher_candle,
            o.steps_for(r.steps),
            r.loss_first_last.0,
            r.loss_first_last.1,
            r.train_seconds
        );
    }
    let _ = writeln!(s);
    s.push_str(&grid_sentence(o));
}

/// Renders the card text (without writing it); `distilled` adds the distillation rounds.
pub fn render_card(t: &TeacherReport, distilled: Option<&DistillReport>, extra_markdown: &str) -> String {
    let o = &t.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(s, "# ddpm — class-conditional UNet denoiser on 16×16 glyphs\n");
    let _ = writeln!(
        s,
        "A small diffusion UNet (timestep and class embedding, GroupNorm, SiLU, residual blocks, stride-2 \
         down-sampling, nearest up-sampling, self-attention at 4×4) trained from scratch in candle by `mote zoo \
         train ddpm` with v-prediction on the cosine schedule, class-conditional with label dropout for \
         classifier-free guidance, and sampled on the device by the runtime's `mote::diffusion::sample` \
         (`mote flash --steps 4 --class 1 --guidance 3 models/ddpm/teacher.mote`). The schedule, the DDIM \
         sampler and the metadata keys are `ddpm2d`'s (`zoo::diffusion`).\n"
    );
    let _ = writeln!(s, "## Data\n");
    let names: Vec<String> =
        GLYPH_CLASSES.iter().take(c.classes).enumerate().map(|(i, n)| format!("{i} {n}")).collect();
    let _ = writeln!(
        s,
        "The procedural glyphs of the VAE and GAN cards (`zoo::vae::glyphs`), classes {}; pixels p ∈ [0, 1] are \
         modelled as x₀ = 2p − 1. Training: {} glyphs (seed {TRAIN_SEED:#x}); held-out: the first {} glyphs of \
         seed {TEST_SEED:#x} (regenerated, not stored); floor: a fresh draw (seed {FLOOR_SEED:#x}).\n",
        names.join(", "),
        o.train_images,
        o.eval.samples
    );
    architecture(&mut s, t);
    training(&mut s, t);
    quality(&mut s, t, &t.candle);
    let grids = &t.grid_panels;
    if !grids.is_empty() {
        let _ = writeln!(
            s,
            "![samples](samples.png)\n\n`samples.png` (candle): one row per class ({}), left to right: {}.\n",
            names.join(", "),
            grids.join(" | ")
        );
    }
    let _ = writeln!(
        s,
        "The exported ONNX in tract matches candle to {:.1e} (max-abs, golden batch).\n",
        t.onnx_vs_candle_max_abs
    );
    few_steps(&mut s, t, distilled);
    s.push_str(extra_markdown);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Writes `card.md` to `dir`.
pub fn write_card(
    dir: &Path,
    t: &TeacherReport,
    distilled: Option<&DistillReport>,
    extra_markdown: &str,
) -> Result<()> {
    let path = dir.join("card.md");
    std::fs::write(&path, render_card(t, distilled, extra_markdown))
        .with_context(|| format!("writing {}", path.display()))
}
