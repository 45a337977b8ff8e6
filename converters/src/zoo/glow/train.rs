//! Training Glow on dequantised glyphs by maximum likelihood and writing its artefacts:
//! `forward.onnx`, `inverse.onnx`, `golden/` (candle's outputs on one batch) and `calib/`.
//! The test set is procedural (seeded glyphs and seeded dequantisation
//! noise, [`GlowTrainOptions::test_set`]), so it is regenerated rather than committed.
//!
//! ```no_run
//! use mote_converters::zoo::glow::{train_glow, write_glow_card, GlowTrainOptions};
//! let out = std::path::Path::new("models/glow");
//! let report = train_glow(out, &GlowTrainOptions::default())?;
//! write_glow_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{dequantise, quantise, to_pixels, GaussianNd};
use super::quality::precision_recall;
use super::{Glow, GlowConfig};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Trainer};
use crate::zoo::vae::glyphs::{energy_distance, energy_distance_local, glyphs, independent_pixels};
use crate::zoo::vae::train::gaussians;
use crate::zoo::vae::PIXELS;

/// Seed of the training glyphs (the VAE's training set).
pub const TRAIN_SEED: u64 = 0x61f;
/// Seed of the held-out test glyphs (the VAE's test set).
pub const TEST_SEED: u64 = 0x7e57;
/// Seed of the test set's dequantisation noise.
pub const TEST_NOISE_SEED: u64 = 0xde9;
/// Seed of a second, independent draw of test-sized glyphs: the sample metric's noise floor.
pub const FLOOR_SEED: u64 = 0xf100;
/// Seed of [`mote::rng::Rng`] drawing the N(0, I) latents samples are made from.
pub const LATENT_SEED: u64 = 0x1a7e;
/// Seed of the baselines' samples (Gaussian, independent pixels).
pub const BASELINE_SEED: u64 = 0xba5e;
/// Images in the data-dependent initialisation batch.
pub const INIT_BATCH: usize = 256;
/// Calibration batches written to `calib/` (the int8 file quantises no activation, so they
/// only serve the converter's range check).
pub const CALIB_BATCHES: usize = 2;
/// Neighbours of the k-NN balls of [`precision_recall`].
pub const KNN: usize = 3;

/// Training budget, data and settings. [`GlowTrainOptions::default`] is the real zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GlowTrainOptions {
    /// Architecture.
    pub config: GlowConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on the convolution kernels.
    pub weight_decay: f64,
    /// Seed of the initialisation, the batch order and the training noise.
    pub seed: u64,
    /// Training images (a fixed set of glyphs; fresh dequantisation noise every step).
    pub train_images: usize,
    /// Held-out test images.
    pub test_images: usize,
    /// Bits per pixel the glyphs are quantised to before dequantisation.
    pub bits: u32,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for GlowTrainOptions {
    fn default() -> Self {
        Self {
            config: GlowConfig::default(),
            steps: 1500,
            batch_size: 64,
            lr: 1e-3,
            warmup: 200,
            weight_decay: 0.0,
            seed: 42,
            train_images: 16384,
            test_images: 512,
            bits: 5,
            quiet: false,
        }
    }
}

impl GlowTrainOptions {
    /// The training glyphs as [`GlowTrainOptions::bits`]-bit levels (`train_images · 256`).
    pub fn train_levels(&self) -> Vec<u8> {
        quantise(&glyphs(self.train_images, TRAIN_SEED).images, self.bits)
    }

    /// Dequantises `levels` with noise from `rng`.
    pub fn dequantise(&self, levels: &[u8], rng: &mut SplitMix64) -> Vec<f32> {
        dequantise(levels, self.bits, rng)
    }

    /// The held-out test set, dequantised with [`TEST_NOISE_SEED`] (`test_images · 256`).
    pub fn test_set(&self) -> Vec<f32> {
        let levels = quantise(&glyphs(self.test_images, TEST_SEED).images, self.bits);
        self.dequantise(&levels, &mut SplitMix64::new(TEST_NOISE_SEED))
    }

    /// The Gaussian baseline: a full-covariance Gaussian fitted on the training set
    /// dequantised once (noise seed derived from `seed`).
    pub fn gaussian_baseline(&self) -> Result<GaussianNd> {
        let x = self.dequantise(&self.train_levels(), &mut SplitMix64::new(self.seed ^ 0x9a55));
        GaussianNd::fit(&x, PIXELS).ok_or_else(|| anyhow!("the training covariance is singular"))
    }
}

/// What training measured in candle, and the baselines; serialisable for the CLI and the card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GlowReport {
    /// `glow`.
    pub family: String,
    /// Training settings (with the architecture).
    pub options: GlowTrainOptions,
    /// Trainable scalars (the LU factors' strict triangles, not their storage).
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Test NLL (nats/dim) right after the data-dependent initialisation, before any step.
    pub init_nll: f64,
    /// Smoothed training NLL at the end (nats/dim).
    pub final_train_nll: f64,
    /// `(step, smoothed train NLL nats/dim)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Test NLL of the candle model (nats/dim of the dequantised data).
    pub test_nll: f64,
    /// Test NLL of the full-covariance Gaussian fitted on the training set (nats/dim).
    pub baseline_nll: f64,
    /// Energy distances `[pixels, local features]` to the test set of candle's samples.
    pub energy_candle: [f64; 2],
    /// ... of the Gaussian baseline's samples (clamped to [0, 1]).
    pub energy_gaussian: [f64; 2],
    /// ... of images with independently resampled pixels.
    pub energy_independent: [f64; 2],
    /// ... of a fresh draw of glyphs (the metric's noise floor).
    pub energy_floor: [f64; 2],
    /// `[precision, recall]` (k-NN balls in pixel space, [`KNN`]) of candle's samples against
    /// the test set.
    pub pr_candle: [f64; 2],
    /// ... of the Gaussian baseline's samples.
    pub pr_gaussian: [f64; 2],
    /// ... of images with independently resampled pixels.
    pub pr_independent: [f64; 2],
    /// ... of a fresh draw of glyphs (the metric's ceiling).
    pub pr_floor: [f64; 2],
    /// max |inverse(forward(x)) − x| in candle on the test set.
    pub invertibility_candle: f32,
    /// Max |tract − candle| over the golden outputs of both exported graphs.
    pub onnx_vs_candle_max_abs: f32,
}

impl GlowReport {
    /// Reads `train_report.json` from a family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn images(glow: &Glow, x: &[f32]) -> Result<Tensor> {
    let s = glow.config().side;
    Ok(Tensor::from_vec(x.to_vec(), (x.len() / (s * s), 1, s, s), &Device::Cpu)?)
}

/// Candle `(z, log_prob)` of images `x` (`n · D` values), in chunks of 128.
pub fn candle_forward(glow: &Glow, x: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let d = glow.config().dims();
    let (mut z, mut lp) = (Vec::new(), Vec::new());
    for chunk in x.chunks(128 * d) {
        let (zc, lc) = glow.forward(&images(glow, chunk)?)?;
        z.extend(tensor_data(&zc)?);
        lp.extend(tensor_data(&lc)?);
    }
    Ok((z, lp))
}

/// Candle inverse of latents `z` (`n · D` values), in chunks of 128.
pub fn candle_inverse(glow: &Glow, z: &[f32]) -> Result<Vec<f32>> {
    let d = glow.config().dims();
    let mut x = Vec::new();
    for chunk in z.chunks(128 * d) {
        let t = Tensor::from_vec(chunk.to_vec(), (chunk.len() / d, d), &Device::Cpu)?;
        x.extend(tensor_data(&glow.inverse(&t)?)?);
    }
    Ok(x)
}

/// Mean NLL in nats per dimension from per-image log-probabilities of `dims`-dimensional data.
pub fn nll_per_dim(log_probs: &[f32], dims: usize) -> f64 {
    -log_probs.iter().map(|&v| v as f64).sum::<f64>() / (dims * log_probs.len().max(1)) as f64
}

/// `[pixel-space, local-feature]` energy distances of images `a` to `b`.
pub fn energies(a: &[f32], b: &[f32]) -> [f64; 2] {
    [energy_distance(a, b, PIXELS), energy_distance_local(a, b)]
}

/// `[precision, recall]` of sample images `fake` against `real` (pixels, [`KNN`]-NN balls).
pub fn pr(real: &[f32], fake: &[f32]) -> [f64; 2] {
    let (p, r) = precision_recall(real, fake, PIXELS, KNN);
    [p, r]
}

/// Max |a − b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn batch(levels: &[u8], n: usize, rng: &mut SplitMix64) -> Vec<u8> {
    let rows = levels.len() / PIXELS;
    let mut out = Vec::with_capacity(n * PIXELS);
    for _ in 0..n {
        let i = rng.below(rows);
        out.extend_from_slice(&levels[i * PIXELS..(i + 1) * PIXELS]);
    }
    out
}

/// Trains Glow and writes its artefacts to `out`.
pub fn train_glow(out: &Path, o: &GlowTrainOptions) -> Result<GlowReport> {
    let cfg = o.config;
    if cfg.dims() != PIXELS {
        return Err(anyhow!("glow trains on {PIXELS}-pixel glyphs, the config has {} dims", cfg.dims()));
    }
    let glow = Glow::new(cfg, o.seed)?;
    let train = o.train_levels();
    let test = o.test_set();
    let mut rng = SplitMix64::new(o.seed ^ 0x5eed);
    let init = o.dequantise(&batch(&train, INIT_BATCH, &mut rng), &mut rng);
    glow.initialize(&images(&glow, &init)?)?;
    let init_nll = nll_per_dim(&candle_forward(&glow, &test)?.1, cfg.dims());

    let mut t = Trainer::new(glow.params(), "glow", schedule_of!(o))?.with_smoothing(0.97, 0.03);
    for step in 0..o.steps {
        let lr = t.set_lr(step);
        let x = o.dequantise(&batch(&train, o.batch_size, &mut rng), &mut rng);
        let (_, lp) = glow.forward(&images(&glow, &x)?)?;
        let loss = (lp.mean_all()? * (-1.0 / cfg.dims() as f64))?;
        t.apply(&loss)?;
        t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    let (train_seconds, final_train_nll, loss_curve) = t.finish("");

    let (z, lp) = candle_forward(&glow, &test)?;
    let invertibility_candle = max_abs(&candle_inverse(&glow, &z)?, &test);
    let n = o.test_images;
    let samples = to_pixels(&candle_inverse(&glow, &gaussians(n, cfg.dims(), LATENT_SEED))?);
    let reference = to_pixels(&test);
    let gauss = o.gaussian_baseline()?;
    let gauss_samples = to_pixels(&gauss.sample(n, BASELINE_SEED));
    let train_pixels = glyphs(o.train_images, TRAIN_SEED).images;
    let independent = independent_pixels(&train_pixels, n, BASELINE_SEED);
    let floor = glyphs(n, FLOOR_SEED).images;
    let onnx_vs_candle_max_abs = write_artefacts(out, &glow, o, &train, &test)?;
    Ok(GlowReport {
        family: "glow".into(),
        options: o.clone(),
        params: glow.trainable_scalars(),
        train_seconds,
        init_nll,
        final_train_nll,
        loss_curve,
        test_nll: nll_per_dim(&lp, cfg.dims()),
        baseline_nll: gauss.nll_per_dim(&test),
        energy_candle: energies(&samples, &reference),
        energy_gaussian: energies(&gauss_samples, &reference),
        energy_independent: energies(&independent, &reference),
        energy_floor: energies(&floor, &reference),
        pr_candle: pr(&reference, &samples),
        pr_gaussian: pr(&reference, &gauss_samples),
        pr_independent: pr(&reference, &independent),
        pr_floor: pr(&reference, &floor),
        invertibility_candle,
        onnx_vs_candle_max_abs,
    })
}

fn images_array(glow: &Glow, x: &[f32]) -> Array {
    let s = glow.config().side;
    Array::f32(vec![x.len() / (s * s), 1, s, s], x.to_vec())
}

/// Writes both ONNX graphs, golden candle outputs on the first `max_batch` test images and
/// latents and [`CALIB_BATCHES`] calibration batches of dequantised training images;
/// returns tract vs candle max-abs over the golden outputs.
fn write_artefacts(out: &Path, glow: &Glow, o: &GlowTrainOptions, train: &[u8], test: &[f32]) -> Result<f32> {
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let (fwd, inv) = (out.join("forward.onnx"), out.join("inverse.onnx"));
    std::fs::write(&fwd, glow.export_forward()?)?;
    std::fs::write(&inv, glow.export_inverse()?)?;
    let (n, d) = (glow.config().max_batch, glow.config().dims());
    let x = &test[..n * d];
    let (z, lp) = candle_forward(glow, x)?;
    let lat = gaussians(n, d, LATENT_SEED);
    let sample = candle_inverse(glow, &lat)?;
    images_array(glow, x).write_npy(&out.join("golden/x.npy"))?;
    Array::f32(vec![n, d], z.clone()).write_npy(&out.join("golden/z.npy"))?;
    Array::f32(vec![n, 1], lp.clone()).write_npy(&out.join("golden/log_prob.npy"))?;
    Array::f32(vec![n, d], lat.clone()).write_npy(&out.join("golden/latent.npy"))?;
    images_array(glow, &sample).write_npy(&out.join("golden/sample.npy"))?;
    let tf = crate::verify::tract_reference(&fwd, &[images_array(glow, x)])?;
    let ti = crate::verify::tract_reference(&inv, &[Array::f32(vec![n, d], lat)])?;
    let worst = max_abs(&tf[0].to_f32(), &z).max(max_abs(&tf[1].to_f32(), &lp)).max(max_abs(&ti[0].to_f32(), &sample));

    let mut r = SplitMix64::new(o.seed ^ 0xca11b);
    for i in 0..CALIB_BATCHES {
        let b = o.dequantise(&batch(train, n, &mut r), &mut r);
        images_array(glow, &b).write_npy(&out.join(format!("calib/s{i}.npy")))?;
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_learns_and_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_glow_{}", std::process::id()));
        let o = GlowTrainOptions {
            config: GlowConfig { steps: 1, hidden: 8, ..GlowConfig::default() },
            steps: 40,
            batch_size: 32,
            warmup: 5,
            train_images: 512,
            test_images: 64,
            quiet: true,
            ..GlowTrainOptions::default()
        };
        let r = train_glow(&dir, &o)?;
        assert!(r.test_nll.is_finite() && r.test_nll < r.init_nll - 0.1, "{} vs init {}", r.test_nll, r.init_nll);
        assert!(r.invertibility_candle < 1e-4, "{}", r.invertibility_candle);
        assert!(r.onnx_vs_candle_max_abs < 1e-2, "{}", r.onnx_vs_candle_max_abs);
        for f in ["forward.onnx", "inverse.onnx", "golden/log_prob.npy", "golden/sample.npy", "calib/s1.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
