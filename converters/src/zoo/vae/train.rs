//! Training the glyph VAE by maximising the ELBO and writing its artefacts: `decoder.onnx`,
//! `encoder.onnx`, `data/test.npy`, `golden/`, `calib/` and the PNG grids.
//!
//! ```no_run
//! use mote_converters::zoo::vae::{train_vae, write_vae_card, VaeTrainOptions};
//! let out = std::path::Path::new("models/vae");
//! let report = train_vae(out, &VaeTrainOptions::default())?;
//! write_vae_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::glyphs::{
    self, energy_distance, energy_distance_local, glyphs, grid_png, independent_pixels, mean_image, uniform_noise,
    Glyphs,
};
use super::{Vae, VaeConfig, PIXELS, SIDE};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Trainer};

/// Seed of the training set.
pub const TRAIN_SEED: u64 = 0x61f;
/// Seed of the held-out test set (`data/test.npy`).
pub const TEST_SEED: u64 = 0x7e57;
/// Seed of a second, independent draw of test-sized data: its energy distance to the test set
/// is the noise floor of the sample-quality metric.
pub const FLOOR_SEED: u64 = 0xf100;
/// Seed of [`mote::rng::Rng`] drawing the N(0, I) latents that samples are decoded from.
pub const LATENT_SEED: u64 = 0x1a7e;
/// Seed of [`mote::rng::Rng`] drawing the reparameterisation noise ε of the test ELBO.
pub const EPS_SEED: u64 = 0xe95;
/// Seed of the baselines' samples (independent pixels, uniform noise).
pub const BASELINE_SEED: u64 = 0xba5e;
/// Images in the golden batch (one batch of the exported bound).
pub const GOLDEN: usize = 8;
/// Probabilities are clamped to `[P_MIN, 1 − P_MIN]` when the ELBO is scored from decoded
/// images (f32 sigmoid outputs saturate to exactly 0 or 1).
pub const P_MIN: f64 = 1e-6;

/// Training budget, data and settings. [`VaeTrainOptions::default`] is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeTrainOptions {
    /// Architecture.
    pub config: VaeConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Seed of the initialisation, the batch order and the training noise.
    pub seed: u64,
    /// Training images (a fixed set).
    pub train_images: usize,
    /// Held-out test images (ELBO, reconstruction and the energy-distance reference).
    pub test_images: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for VaeTrainOptions {
    fn default() -> Self {
        Self {
            config: VaeConfig::default(),
            steps: 3000,
            batch_size: 64,
            lr: 2e-3,
            warmup: 100,
            weight_decay: 0.0,
            seed: 42,
            train_images: 16384,
            test_images: 512,
            quiet: false,
        }
    }
}

impl VaeTrainOptions {
    /// The training set.
    pub fn train_set(&self) -> Glyphs {
        glyphs(self.train_images, TRAIN_SEED)
    }

    /// The held-out test set.
    pub fn test_set(&self) -> Glyphs {
        glyphs(self.test_images, TEST_SEED)
    }
}

/// Scores of one model on the test set; serialisable.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VaeScores {
    /// Negative ELBO, nats per image (one ε per image from [`EPS_SEED`]).
    pub neg_elbo: f64,
    /// Its reconstruction term `−log p(x | z)`, nats per image.
    pub reconstruction_nll: f64,
    /// Its KL term, nats per image.
    pub kl: f64,
    /// Mean squared error per pixel of `decode(μ(x))` against `x`.
    pub recon_mse: f64,
    /// Energy distance of decoded N(0, I) latents ([`LATENT_SEED`]) to the test set, pixels.
    pub energy: f64,
    /// The same in the [`glyphs::local_features`] space (pixels and neighbour products).
    pub energy_local: f64,
}

/// What training measured in candle, and the baselines; serialisable for the CLI and the card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeReport {
    /// `vae`.
    pub family: String,
    /// Training settings (with the architecture).
    pub options: VaeTrainOptions,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss (negative ELBO, nats/image) at the end.
    pub final_train_loss: f64,
    /// `(step, smoothed train loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// The candle model on the test set.
    pub candle: VaeScores,
    /// Test NLL (nats/image) of independent per-pixel Bernoullis with the training mean image as
    /// probabilities: the ELBO of a VAE that ignores z.
    pub baseline_nll: f64,
    /// Per-pixel MSE of the training mean image against the test images.
    pub baseline_mse: f64,
    /// Energy distances (pixels, local features) to the test set of the mean image (every
    /// sample the same).
    pub energy_mean_image: [f64; 2],
    /// ... of images with independently resampled pixels (per-pixel marginals of the training set).
    pub energy_independent: [f64; 2],
    /// ... of uniform noise images.
    pub energy_noise: [f64; 2],
    /// ... of a fresh draw of glyphs (the metric's noise floor).
    pub energy_floor: [f64; 2],
    /// Max |tract − candle| over the golden outputs of both exported graphs.
    pub onnx_vs_candle_max_abs: f32,
}

impl VaeReport {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// `n · dim` standard-normal values drawn by the runtime's [`mote::rng::Rng::gaussian`] from
/// `seed` (what a device draws to sample).
pub fn gaussians(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = mote::rng::Rng::new(seed);
    (0..n * dim).map(|_| r.gaussian()).collect()
}

/// `z = μ + exp(½ log σ²) ε`, elementwise.
pub fn reparameterise(mu: &[f32], logvar: &[f32], eps: &[f32]) -> Vec<f32> {
    mu.iter().zip(logvar).zip(eps).map(|((m, l), e)| m + (0.5 * l).exp() * e).collect()
}

/// Negative ELBO terms summed over images: `(Σ −log p(x|z), Σ KL)` from the images `x`, the
/// encoder's `μ`, `log σ²` and the decoded Bernoulli probabilities `p` of `z` (clamped to
/// `[P_MIN, 1 − P_MIN]`).
pub fn elbo_sums(x: &[f32], mu: &[f32], logvar: &[f32], p: &[f32]) -> (f64, f64) {
    let rec: f64 = x
        .iter()
        .zip(p)
        .map(|(&x, &p)| {
            let p = (p as f64).clamp(P_MIN, 1.0 - P_MIN);
            -(x as f64 * p.ln() + (1.0 - x as f64) * (1.0 - p).ln())
        })
        .sum();
    let kl: f64 =
        mu.iter().zip(logvar).map(|(&m, &l)| 0.5 * ((m as f64).powi(2) + (l as f64).exp() - 1.0 - l as f64)).sum();
    (rec, kl)
}

/// Mean squared difference.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len().max(1) as f64
}

/// A model as the scoring needs it: encode images to `(μ, log σ²)`, decode latents to images.
pub trait VaeRunner {
    /// `(μ, log σ²)` of `n` images (`n · 256` pixels), each `n · L`.
    fn encode(&mut self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)>;
    /// Images (`n · 256`) of `n` latents (`n · L`).
    fn decode(&mut self, z: &[f32]) -> Result<Vec<f32>>;
}

/// A model's scores with the images they were computed from.
pub struct Scored {
    /// The scores.
    pub scores: VaeScores,
    /// Decoded N(0, I) latents ([`LATENT_SEED`]), one per test image.
    pub samples: Vec<f32>,
    /// `decode(μ(x))` of every test image.
    pub recon: Vec<f32>,
}

/// Scores a model on the images `test`.
pub fn score(m: &mut dyn VaeRunner, test: &[f32], latent: usize) -> Result<Scored> {
    let n = test.len() / PIXELS;
    let (mu, logvar) = m.encode(test)?;
    let z = reparameterise(&mu, &logvar, &gaussians(n, latent, EPS_SEED));
    let p = m.decode(&z)?;
    let (rec, kl) = elbo_sums(test, &mu, &logvar, &p);
    let recon = m.decode(&mu)?;
    let samples = m.decode(&gaussians(n, latent, LATENT_SEED))?;
    let scores = VaeScores {
        neg_elbo: (rec + kl) / n as f64,
        reconstruction_nll: rec / n as f64,
        kl: kl / n as f64,
        recon_mse: mse(&recon, test),
        energy: energy_distance(&samples, test, PIXELS),
        energy_local: energy_distance_local(&samples, test),
    };
    Ok(Scored { scores, samples, recon })
}

/// The candle model as a [`VaeRunner`].
pub struct CandleVae<'a>(pub &'a Vae);

impl VaeRunner for CandleVae<'_> {
    fn encode(&mut self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = images.len() / PIXELS;
        let x = Tensor::from_vec(images.to_vec(), (n, 1, SIDE, SIDE), &Device::Cpu)?;
        let (mu, logvar) = self.0.encode(&x)?;
        Ok((tensor_data(&mu)?, tensor_data(&logvar)?))
    }

    fn decode(&mut self, z: &[f32]) -> Result<Vec<f32>> {
        let l = self.0.config().latent;
        let z = Tensor::from_vec(z.to_vec(), (z.len() / l, l), &Device::Cpu)?;
        tensor_data(&self.0.decode(&z)?)
    }
}

/// Test NLL (nats/image) of per-pixel Bernoullis with probabilities `mean`.
pub fn bernoulli_baseline_nll(mean: &[f32], test: &[f32]) -> f64 {
    let n = test.len() / PIXELS;
    let p: Vec<f32> = test.chunks(PIXELS).flat_map(|_| mean.iter().copied()).collect();
    elbo_sums(test, &[], &[], &p).0 / n as f64
}

/// `[pixel-space, local-feature]` energy distances of `a` to `b`.
pub fn energies(a: &[f32], b: &[f32]) -> [f64; 2] {
    [energy_distance(a, b, PIXELS), energy_distance_local(a, b)]
}

fn images_array(images: &[f32]) -> Array {
    Array::f32(vec![images.len() / PIXELS, 1, SIDE, SIDE], images.to_vec())
}

/// Trains the VAE and writes its artefacts to `out`.
pub fn train_vae(out: &Path, o: &VaeTrainOptions) -> Result<VaeReport> {
    let cfg = o.config;
    let vae = Vae::new(cfg, o.seed)?;
    let train = o.train_set();
    let test = o.test_set();
    let dev = Device::Cpu;
    let mut rng = SplitMix64::new(o.seed ^ 0x5eed);
    let mut trainer = Trainer::new(vae.params(), "vae", schedule_of!(o))?;
    for step in 0..o.steps {
        let lr = trainer.set_lr(step);
        let mut batch = Vec::with_capacity(o.batch_size * PIXELS);
        for _ in 0..o.batch_size {
            batch.extend_from_slice(train.image(rng.below(train.len())));
        }
        let x = Tensor::from_vec(batch, (o.batch_size, 1, SIDE, SIDE), &dev)?;
        let eps = Tensor::from_vec(rng.normal_vec(o.batch_size * cfg.latent, 1.0), (o.batch_size, cfg.latent), &dev)?;
        let t = vae.elbo_terms(&x, &eps)?;
        let loss = (t.reconstruction + t.kl)?.mean_all()?;
        let l = loss.to_scalar::<f32>()? as f64;
        trainer.apply(&loss)?;
        trainer.record(step, l, lr, "");
    }
    let (train_seconds, final_train_loss, loss_curve) = trainer.finish("");

    // Scores and baselines on the test set.
    let mut runner = CandleVae(&vae);
    let Scored { scores, samples, .. } = score(&mut runner, &test.images, cfg.latent)?;
    let mean = mean_image(&train.images, PIXELS);
    let n = test.len();
    let repeated_mean: Vec<f32> = (0..n).flat_map(|_| mean.iter().copied()).collect();
    let floor = glyphs(n, FLOOR_SEED);

    // Artefacts.
    for d in ["data", "golden", "calib"] {
        std::fs::create_dir_all(out.join(d))?;
    }
    std::fs::write(out.join("decoder.onnx"), vae.export_decoder()?)?;
    std::fs::write(out.join("encoder.onnx"), vae.export_encoder()?)?;
    images_array(&test.images).write_npy(&out.join("data/test.npy"))?;
    let gx = &test.images[..GOLDEN * PIXELS];
    let (gmu, glogvar) = runner.encode(gx)?;
    let gz = gaussians(GOLDEN, cfg.latent, LATENT_SEED);
    let l = cfg.latent;
    images_array(gx).write_npy(&out.join("golden/image.npy"))?;
    Array::f32(vec![GOLDEN, l], gmu.clone()).write_npy(&out.join("golden/mu.npy"))?;
    Array::f32(vec![GOLDEN, l], glogvar.clone()).write_npy(&out.join("golden/logvar.npy"))?;
    let grecon = runner.decode(&gmu)?;
    images_array(&grecon).write_npy(&out.join("golden/recon.npy"))?;
    Array::f32(vec![GOLDEN, l], gz.clone()).write_npy(&out.join("golden/z.npy"))?;
    let gsample = runner.decode(&gz)?;
    images_array(&gsample).write_npy(&out.join("golden/sample.npy"))?;
    // Calibration of `forward` (the decoder): prior latents and posterior samples of training images.
    let mut crng = SplitMix64::new(o.seed ^ 0xca1);
    for k in 0..8 {
        let z = if k < 4 {
            crng.normal_vec(GOLDEN * l, 1.0)
        } else {
            let mut imgs = Vec::new();
            for _ in 0..GOLDEN {
                imgs.extend_from_slice(train.image(crng.below(train.len())));
            }
            let (mu, logvar) = runner.encode(&imgs)?;
            reparameterise(&mu, &logvar, &crng.normal_vec(GOLDEN * l, 1.0))
        };
        Array::f32(vec![GOLDEN, l], z).write_npy(&out.join(format!("calib/{k}.npy")))?;
    }
    // Export parity on the golden batch.
    let enc = crate::zoo::tract_run::run_tract_f32(
        &std::fs::read(out.join("encoder.onnx"))?,
        &Tensor::from_vec(gx.to_vec(), (GOLDEN, 1, SIDE, SIDE), &dev)?,
    )?;
    let dec = crate::zoo::tract_run::run_tract_f32(
        &std::fs::read(out.join("decoder.onnx"))?,
        &Tensor::from_vec(gz.clone(), (GOLDEN, l), &dev)?,
    )?;
    let max_abs = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let onnx_vs_candle_max_abs = max_abs(&enc, &gmu).max(max_abs(&dec, &gsample));
    grid_png(&out.join("data/glyphs.png"), &[&test.images[..64 * PIXELS]], 8, 2)?;
    grid_png(&out.join("candle_samples.png"), &[&samples[..64 * PIXELS]], 8, 2)?;

    Ok(VaeReport {
        family: "vae".into(),
        options: o.clone(),
        params: vae.params().count(),
        train_seconds,
        final_train_loss,
        loss_curve,
        candle: scores,
        baseline_nll: bernoulli_baseline_nll(&mean, &test.images),
        baseline_mse: mse(&repeated_mean, &test.images),
        energy_mean_image: energies(&repeated_mean, &test.images),
        energy_independent: energies(&independent_pixels(&train.images, n, BASELINE_SEED), &test.images),
        energy_noise: energies(&uniform_noise(n, BASELINE_SEED), &test.images),
        energy_floor: energies(&floor.images, &test.images),
        onnx_vs_candle_max_abs,
    })
}

/// Names of the glyph classes (re-exported for the card).
pub fn class_names() -> &'static [&'static str] {
    &glyphs::GLYPH_CLASSES
}
