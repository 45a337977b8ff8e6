//! The `ldm` model card (`card.md`): latents, architecture, training and distillation (candle
//! figures), with the runtime section (measured by the CLI) appended.
//!
//! ```no_run
//! use mote_converters::zoo::ldm::{card::write_ldm_card, LdmReport};
//! let dir = std::path::Path::new("models/ldm");
//! write_ldm_card(dir, &LdmReport::read(dir)?, None, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::LdmReport;
use crate::zoo::diffusion::card::{grid_sentence, write_rounds_table};
use crate::zoo::diffusion::DistillReport;
use crate::zoo::vae::glyphs::GLYPH_CLASSES;

/// Renders the card text (without writing it).
pub fn render_ldm_card(r: &LdmReport, d: Option<&DistillReport>, extra_markdown: &str) -> String {
    let t = &r.teacher;
    let o = &t.options;
    let c = &o.config;
    let l = &r.latents;
    let mut s = String::new();
    let _ = writeln!(s, "# ldm — latent diffusion on the glyph VAE, distilled to few steps, decoded on the device\n");
    let _ = writeln!(
        s,
        "A class-conditional v-predicting diffusion model in the 16-dimensional latent space of the committed glyph \
         VAE (`models/vae`), trained from scratch in candle by `mote-converters` (zoo), distilled progressively \
         (Salimans & Ho, 2022) into 4-, 2- and 1-step students and sampled with classifier-free guidance. The \
         device file `model.mote` / `model.int8.mote` is the 4-step student as `forward` plus the VAE's decoder \
         (`models/vae/decoder.onnx`, unchanged) as `decode`: `mote::diffusion::sample` draws {} latents from a \
         seed, the `decode` entry turns them into {} glyphs, on the host and on a Cortex-M4 alike.\n",
        c.max_batch, c.max_batch
    );
    let _ = writeln!(s, "## Latents\n");
    let _ = writeln!(
        s,
        "The training data are the means μ of q(z | x) of the VAE's own {} training glyphs ({} classes: {}), \
         encoded by `models/vae/encoder.onnx` in tract. The VAE's KL term already keeps them near unit variance: \
         σ(μ) = {:.3} over all values (per dimension {:.2}–{:.2}, |mean| ≤ {:.3}; the posterior's own σ averages \
         {:.2}), so no scale factor is applied and the decoder takes the samples as they are (a latent scale would \
         have to sit in front of the decoder in the `decode` graph). The held-out set is the VAE's \
         `models/vae/data/test.npy` (512 glyphs), not a copy.\n",
        l.glyphs,
        GLYPH_CLASSES.len(),
        GLYPH_CLASSES.join(", "),
        l.mu_std,
        l.mu_std_range.0,
        l.mu_std_range.1,
        l.mu_mean_abs_max,
        l.posterior_sigma_mean
    );
    let _ = writeln!(s, "## Model\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| schedule | cosine (Nichol & Dhariwal, s = 0.008), T = {} discrete steps, ᾱ_{{T−1}} ≈ 0 (`ddpm2d`'s) |",
        c.timesteps
    );
    let _ = writeln!(s, "| prediction | v = α·ε − σ·x₀ (well conditioned at every t; see the ddpm2d card) |");
    let _ = writeln!(
        s,
        "| denoiser | `zoo::diffusion::Denoiser` with D = {}: e = SiLU(Linear(sinusoid table[t]) + class embedding); \
         h = Linear {} → {h}; {} residual blocks h ← h + W₂·SiLU(W₁·SiLU(h) + P·e); v̂ = Linear {h} → {} (SiLU(h)) |",
        c.dim,
        c.dim,
        c.blocks,
        c.dim,
        h = c.hidden
    );
    let _ = writeln!(
        s,
        "| classes | {} glyph classes + the null class {} (label dropout {}) |",
        c.classes,
        c.null_class(),
        o.label_dropout
    );
    let _ = writeln!(
        s,
        "| parameters | {} trainable (plus the fixed `[{}, {}]` time table) |",
        t.params, c.timesteps, c.time_features
    );
    let _ = writeln!(
        s,
        "| rows per call | {} = the decoder's batch bound: one sample run decodes to {} glyphs |\n",
        c.max_batch, c.max_batch
    );
    let _ = writeln!(s, "## Teacher training\n");
    let _ = writeln!(
        s,
        "{} AdamW steps of {} latents (lr {} with {} warm-up steps then cosine to 10%, weight decay {}), t uniform in \
         0..T, seed {}; the exported weights are the exponential moving average (decay {}) of the trained ones. \
         {:.0} s wall on two busy cores. Final smoothed v-loss {:.4} (of the trained weights).\n",
        o.steps, o.batch_size, o.lr, o.warmup, o.weight_decay, o.seed, o.ema, t.train_seconds, t.final_train_loss
    );
    let _ = writeln!(s, "| step | v-loss (smoothed) |\n|---|---|");
    for (step, loss) in t.loss_curve.iter().step_by(4) {
        let _ = writeln!(s, "| {step} | {loss:.4} |");
    }
    let energies: Vec<String> = t.energy_candle.iter().map(|(n, e)| format!("{n} steps {e:.4}")).collect();
    let _ = writeln!(
        s,
        "\nCandle, unconditional DDIM, decoded in tract, energy distance in local features to the held-out glyphs: {} \
         (fresh glyphs {:.4}); tract vs candle on the golden batch {:.1e}.\n",
        energies.join(", "),
        t.energy_floor,
        t.onnx_vs_candle_max_abs
    );
    let _ = writeln!(s, "## Progressive distillation\n");
    match d {
        None => {
            let _ = writeln!(s, "Not run yet: `mote zoo distill ldm --to 1`.\n");
        }
        Some(d) => {
            let p = &d.options;
            let _ = writeln!(
                s,
                "As for `ddpm2d`: each round a student initialised from its teacher learns to match two deterministic \
                 DDIM steps of the teacher with one (v-regression of the x̃ target), label dropout {} continuing so \
                 guidance still works. N₀ = {}, {} rounds of {} AdamW steps of {} latents (lr {}, {} warm-up steps, \
                 cosine), seed {}; total {:.0} s wall. Candle, unconditional DDIM, decoded, energy distance in local \
                 features:\n",
                p.label_dropout,
                p.from_steps,
                d.rounds.len(),
                p.steps,
                p.batch_size,
                p.lr,
                p.warmup,
                p.seed,
                d.rounds.iter().map(|r| r.train_seconds).sum::<f64>()
            );
            write_rounds_table(&mut s, &d.rounds, 4);
            s.push_str(&grid_sentence(p));
            if let (Some(r8), Some(r4)) = (d.round(8), d.round(4)) {
                let _ = writeln!(
                    s,
                    "The students track the teacher down to 8 steps; the 4-step round ends at {:.0}× the 8-step round's \
                     loss, and that is where the {}-parameter student falls behind the teacher's many-step samples.\n",
                    r4.loss_first_last.1 / r8.loss_first_last.1,
                    t.params
                );
            }
        }
    }
    s.push_str(extra_markdown);
    s
}

/// Writes `card.md` in `dir`.
pub fn write_ldm_card(dir: &Path, r: &LdmReport, d: Option<&DistillReport>, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_ldm_card(r, d, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
