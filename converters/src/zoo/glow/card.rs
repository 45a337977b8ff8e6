//! The Glow model card (`card.md`): data, architecture, training and the candle figures,
//! with the runtime section (measured by the CLI) appended.
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::glow::GlowReport) -> anyhow::Result<()> {
//! mote_converters::zoo::glow::write_glow_card(std::path::Path::new("models/glow"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::data::{bits_per_dim, levels};
use super::train::{
    GlowReport, BASELINE_SEED, FLOOR_SEED, INIT_BATCH, KNN, LATENT_SEED, TEST_NOISE_SEED, TEST_SEED, TRAIN_SEED,
};

fn pair(v: [f64; 2]) -> String {
    format!("{:.4} / {:.4}", v[0], v[1])
}

/// Renders the card text (without writing it).
pub fn render_glow_card(r: &GlowReport, extra_markdown: &str) -> String {
    let o = &r.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# glow — multi-scale normalizing flow (actnorm, invertible 1×1 conv, affine coupling) on 16×16 glyphs\n"
    );
    let _ = writeln!(
        s,
        "A Glow flow (Kingma & Dhariwal, 2018) trained from scratch in candle by `mote zoo train glow` by \
         maximum likelihood under a standard normal prior, and exported to ONNX by the same layer code in both \
         directions: `forward.onnx` (`x [n,1,16,16]` → `z [n,256]`, `log_prob [n,1]` = log N(z; 0, I) + \
         log|det ∂z/∂x|) and `inverse.onnx` (`z [n,256]` → `x [n,1,16,16]`). Both become entry points `forward` \
         and `inverse` of one `.mote` file. The 1×1 convolutions are stored as W (forward) and W⁻¹ (inverse, \
         computed in f64 at export); actnorm and coupling weights are shared by the two entries.\n"
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "The procedural 16×16 glyphs of the VAE (`zoo::vae::glyphs`: ring, plus, cross, square, bar, triangle at \
         random positions, sizes, stroke widths and angles), quantised to {b} bits (`q = round({top} p)`, as Glow \
         quantises its CelebA images to 5 bits to spend capacity on shapes rather than on the lowest bits) and \
         dequantised as `x = (q + u)/{l} − ½`, `u ~ U[0,1)` (`zoo::glow::data`). Training: {} glyphs (seed \
         {TRAIN_SEED:#x}) with fresh noise every step; held-out test: {} glyphs (seed {TEST_SEED:#x}) with noise \
         seed {TEST_NOISE_SEED:#x}, regenerated from the seeds by the evaluation (not committed; \
         the first panel of `samples.png` shows 32 of them). NLL is in nats per dimension of the dequantised data; \
         bits/dim of the {b}-bit images = NLL/ln 2 + {b} (the dequantisation bound). Samples are `inverse` of \
         latents drawn by `mote::rng::Rng::gaussian` (seed {LATENT_SEED:#x}), shown as pixels `clamp(x + ½, 0, 1)`.\n",
        o.train_images,
        o.test_images,
        b = o.bits,
        top = levels(o.bits) - 1,
        l = levels(o.bits)
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let shapes = c.level_shapes();
    let levels: Vec<String> = shapes
        .iter()
        .enumerate()
        .map(|(l, (ch, side))| {
            let split =
                if l + 1 < shapes.len() { format!(", then factor out {} channels", ch / 2) } else { String::new() };
            format!("level {l}: squeeze → {ch}×{side}×{side}, {} steps{split}", c.steps)
        })
        .collect();
    let _ = writeln!(s, "| levels | {} |", levels.join("; "));
    let _ = writeln!(
        s,
        "| step | actnorm (per-channel `x ⊙ s + b`, data-dependent init on a batch of {INIT_BATCH}) → invertible 1×1 \
         conv `W = P·L·(U + diag(sign·exp(log_s)))` (P, sign fixed; initialised to a random rotation) → affine \
         coupling on channel halves |"
    );
    let _ = writeln!(
        s,
        "| coupling | `y_b = x_b ⊙ exp(s) + t`, `(raw, t) = NN(x_a)`, `s = σ ⊙ tanh(raw)` (σ learned per channel); NN = \
         Conv 3×3 (C/2 → {h}) → ReLU → Conv 1×1 ({h} → {h}) → ReLU → Conv 3×3 ({h} → C), last conv zero-initialised |",
        h = c.hidden
    );
    let _ = writeln!(
        s,
        "| log-det | actnorm `H·W·Σ log|s|` and 1×1 conv `H·W·Σ log|diag U|`: constants of the weights, added in \
         the graph; coupling `Σ s` per image (ReduceSum) |"
    );
    let _ = writeln!(s, "| prior | N(0, I) on all 256 latent dims (factored-out halves and the last level) |");
    let _ = writeln!(s, "| parameters | {} trainable scalars |", r.params);
    let _ = writeln!(s, "| exported batch bound | n ≤ {} (`--dim n={}`) |\n", c.max_batch, c.max_batch);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "{} AdamW steps of {} images (lr {} with {} warm-up steps then cosine to 10%, weight decay {}), seed {}: \
         {:.0} s wall on this machine's CPU. Test NLL after the data-dependent initialisation {:.4} nats/dim; \
         final smoothed train NLL {:.4} nats/dim.\n",
        o.steps, o.batch_size, o.lr, o.warmup, o.weight_decay, o.seed, r.train_seconds, r.init_nll, r.final_train_nll
    );
    let _ = writeln!(s, "| step | train NLL (nats/dim, smoothed) |\n|---|---|");
    for (step, l) in r.loss_curve.iter().step_by(4) {
        let _ = writeln!(s, "| {step} | {l:.4} |");
    }
    let _ = writeln!(s, "\n## Metrics in candle (held-out)\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| test NLL nats/dim (bits/dim of the {}-bit images): Glow / full-covariance Gaussian | {:.4} ({:.3}) / {:.4} ({:.3}) |",
        o.bits,
        r.test_nll,
        bits_per_dim(r.test_nll, o.bits),
        r.baseline_nll,
        bits_per_dim(r.baseline_nll, o.bits)
    );
    let _ = writeln!(
        s,
        "| energy distance to the test set, pixels / local features: Glow samples · Gaussian samples · \
         independent pixels · fresh glyphs (floor) | {} · {} · {} · {} |",
        pair(r.energy_candle),
        pair(r.energy_gaussian),
        pair(r.energy_independent),
        pair(r.energy_floor)
    );
    let _ = writeln!(
        s,
        "| precision / recall (k-NN balls in pixels, k = {KNN}): Glow samples · Gaussian samples · independent \
         pixels · fresh glyphs (ceiling) | {} · {} · {} · {} |",
        pair(r.pr_candle),
        pair(r.pr_gaussian),
        pair(r.pr_independent),
        pair(r.pr_floor)
    );
    let _ = writeln!(s, "| max abs inverse(forward(x)) − x | {:.1e} |", r.invertibility_candle);
    let _ =
        writeln!(s, "| tract (both ONNX graphs) vs candle, max-abs on golden | {:.1e} |\n", r.onnx_vs_candle_max_abs);
    let _ = writeln!(
        s,
        "The Gaussian baseline is fitted by maximum likelihood on the training set dequantised once and scored on \
         the same test set; its samples (seed {BASELINE_SEED:#x}) are clamped to [0, 1]. The energy distance \
         (`zoo::vae::glyphs`) is Székely's E-statistic over all pairs of samples and test images, in pixel space \
         and in the local-feature space (pixels and products of neighbouring pixels, which sees whether ink forms \
         strokes); lower is better, and a fresh draw of glyphs (seed {FLOOR_SEED:#x}) gives the floor. It rewards \
         sets whose pixel statistics match, so blurred mean-like images (the Gaussian's samples) score well on it \
         although they are no glyphs. Precision and recall (Kynkäänniemi et al., 2019; `zoo::glow::quality`) ask \
         instead whether each sample lies within the k-NN ball of some held-out image (precision: realism) and \
         whether each held-out image lies within the ball of some sample (recall: coverage); in pixel space, a \
         noisy sample set has large balls, which inflates its recall (see independent pixels).\n"
    );
    let _ = writeln!(
        s,
        "Golden files (`golden/`): `x.npy` (the first {n} dequantised test images) with candle's `z.npy` and \
         `log_prob.npy`; `latent.npy` (the first {n} latents of seed {LATENT_SEED:#x}) with candle's `sample.npy` = \
         inverse. Written by `mote zoo train glow` from the trained candle model.\n",
        n = c.max_batch
    );
    s.push_str(extra_markdown);
    s
}

/// Writes `card.md` in `dir`.
pub fn write_glow_card(dir: &Path, r: &GlowReport, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_glow_card(r, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
