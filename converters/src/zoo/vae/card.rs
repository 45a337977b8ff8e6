//! The VAE model card (`card.md`): data, architecture, training and the candle figures, with
//! the runtime section (measured by the CLI) appended.
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::vae::VaeReport) -> anyhow::Result<()> {
//! mote_converters::zoo::vae::write_vae_card(std::path::Path::new("models/vae"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::glyphs::GLYPH_CLASSES;
use super::train::{VaeReport, BASELINE_SEED, EPS_SEED, FLOOR_SEED, LATENT_SEED, P_MIN, TEST_SEED, TRAIN_SEED};

/// Renders the card text (without writing it).
pub fn render_vae_card(r: &VaeReport, extra_markdown: &str) -> String {
    let o = &r.options;
    let c = &o.config;
    let mut s = String::new();
    let _ = writeln!(s, "# vae — convolutional variational auto-encoder on 16×16 glyphs\n");
    let _ = writeln!(
        s,
        "A VAE trained from scratch in candle by `mote zoo train vae` (ELBO, one reparameterised sample per \
         image) and exported to ONNX by the same layer code as two graphs: `decoder.onnx` (`z [n,{l}]` → \
         `image [n,1,16,16]`, the Bernoulli means) and `encoder.onnx` (`image [n,1,16,16]` → `mu [n,{l}]`, \
         `logvar [n,{l}]`). They become the entries `forward` (decode; a device samples by feeding N(0, 1) \
         latents, the firmware's default inputs) and `encode` of one `.mote`.\n",
        l = c.latent
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "Procedural 16×16 grayscale glyphs (`zoo::vae::glyphs`), {} classes ({}) at random positions, sizes \
         (radius 3–6 px), stroke widths (1–2 px) and angles, rendered from signed distances with a 0.7–1.3 px \
         edge ramp (slight blur); pixels in [0, 1]. Training: {} images (seed {TRAIN_SEED:#x}); held-out \
         test: {} images (seed {TEST_SEED:#x}, committed as `data/test.npy`, the first 64 in \
         `data/glyphs.png`). Samples decode latents drawn by `mote::rng::Rng::gaussian` (seed \
         {LATENT_SEED:#x}); the test ELBO uses ε from seed {EPS_SEED:#x}; baseline samples use seed \
         {BASELINE_SEED:#x}; a fresh glyph draw (seed {FLOOR_SEED:#x}) gives the sample metric's noise floor.\n",
        GLYPH_CLASSES.len(),
        GLYPH_CLASSES.join(", "),
        o.train_images,
        o.test_images
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| encoder | Conv 4×4/2 pad 1 (1 → {c1}, 8×8) → ReLU → Conv 4×4/2 pad 1 ({c1} → {c2}, 4×4) → ReLU → \
         Flatten ({f}) → Linear → μ ({l}) and Linear → log σ² ({l}) |",
        c1 = c.c1,
        c2 = c.c2,
        f = c.c2 * 16,
        l = c.latent
    );
    let _ = writeln!(
        s,
        "| decoder | Linear ({l} → {f}) → ReLU → Reshape [{c2},4,4] → ConvTranspose 4×4/2 pad 1 ({c2} → {c1}, \
         8×8) → ReLU → ConvTranspose 4×4/2 pad 1 ({c1} → 1, 16×16) → Sigmoid |",
        c1 = c.c1,
        c2 = c.c2,
        f = c.c2 * 16,
        l = c.latent
    );
    let _ = writeln!(
        s,
        "| likelihood | per-pixel Bernoulli on the grey levels (binary cross-entropy with the pixel value as target, \
         as in the usual MNIST VAEs; not a normalised density on [0, 1]), prior N(0, I), analytic KL. Scored from \
         the decoded probabilities clamped to [{P_MIN:e}, 1 − {P_MIN:e}] |"
    );
    let _ = writeln!(s, "| parameters | {} |", r.params);
    let _ = writeln!(s, "| exported batch bound | n ≤ {} (`--dim n={}`) |\n", c.max_batch, c.max_batch);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW, {} steps of {} images, peak lr {} (warm-up {}, cosine to 10%), weight decay {}, seed {}: {:.0} s \
         on the CPU; final smoothed training loss {:.2} nats/image. Loss curve (step, −ELBO): {}.\n",
        o.steps,
        o.batch_size,
        o.lr,
        o.warmup,
        o.weight_decay,
        o.seed,
        r.train_seconds,
        r.final_train_loss,
        r.loss_curve
            .iter()
            .step_by(4)
            .chain(r.loss_curve.last())
            .map(|(s, l)| format!("{s}: {l:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "## In candle, on the {} test images\n", o.test_images);
    let _ = writeln!(s, "| figure | VAE | baseline |\n|---|---|---|");
    let k = &r.candle;
    let _ = writeln!(
        s,
        "| −ELBO, nats/image (reconstruction + KL) | {:.2} ({:.2} + {:.2}) | {:.2} (per-pixel Bernoulli with the \
         training mean image: the ELBO of a VAE that ignores z) |",
        k.neg_elbo, k.reconstruction_nll, k.kl, r.baseline_nll
    );
    let _ = writeln!(
        s,
        "| reconstruction MSE per pixel, decode(μ(x)) | {:.5} | {:.5} (the training mean image) |",
        k.recon_mse, r.baseline_mse
    );
    for (i, space) in ["pixels", "local features"].iter().enumerate() {
        let _ = writeln!(
            s,
            "| energy distance of decoded N(0, I) samples to the test set, {space} | {:.4} | mean image {:.4} · \
             independent pixels {:.4} · uniform noise {:.4} · fresh glyphs (floor) {:.4} |",
            if i == 0 { k.energy } else { k.energy_local },
            r.energy_mean_image[i],
            r.energy_independent[i],
            r.energy_noise[i],
            r.energy_floor[i]
        );
    }
    let _ =
        writeln!(s, "| ONNX (tract) vs candle, max-abs on the golden batch | {:.1e} | |\n", r.onnx_vs_candle_max_abs);
    let _ = writeln!(
        s,
        "The energy distance is Székely's E-statistic `2E|X−Y| − E|X−X'| − E|Y−Y'|` with the Euclidean norm in \
         pixel space (256 dimensions, V-statistic over all pairs of {n} samples and {n} test images; \
         `zoo::vae::glyphs::energy_distance`); lower is better and a fresh draw of glyphs gives the floor. \
         In pixel space it is weak: expected squared distances depend only on per-pixel marginals, so images \
         of independently resampled pixels score near the floor although they show no strokes. The \
         local-feature space (`glyphs::local_features`: the pixels plus the products of all horizontally and \
         vertically adjacent pixels) is a fixed second-order feature map that sees whether ink forms strokes; \
         it is the sample-quality metric of this card. VAE samples are the decoder's Bernoulli means (blurrier \
         than the data), which both spaces penalise.\n",
        n = o.test_images
    );
    let beats = |e: f64, b: f64| if e < b { "beat" } else { "do not beat" };
    let _ = writeln!(
        s,
        "Against the baselines, the VAE's samples (local features {:.4}) {} the mean image ({:.4}) and uniform \
         noise ({:.4}) and {} images of independently resampled pixels ({:.4}): those have exactly the data's \
         per-pixel value distributions (ink and background levels, though no strokes), while decoded Bernoulli \
         means are grey and blurred at the stroke edges, and the energy distance weighs marginals heavily. See `samples.png` for what each looks like.\n",
        k.energy_local,
        beats(k.energy_local, r.energy_mean_image[1].min(r.energy_noise[1])),
        r.energy_mean_image[1],
        r.energy_noise[1],
        beats(k.energy_local, r.energy_independent[1]),
        r.energy_independent[1]
    );
    s.push_str(extra_markdown);
    s
}

/// Writes `card.md` into `dir`.
pub fn write_vae_card(dir: &Path, r: &VaeReport, extra_markdown: &str) -> Result<()> {
    let p = dir.join("card.md");
    std::fs::write(&p, render_vae_card(r, extra_markdown)).with_context(|| format!("writing {}", p.display()))
}
