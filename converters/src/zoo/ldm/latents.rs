//! The data of latent diffusion: the glyph VAE's latents. Every glyph is encoded to the mean
//! μ of q(z | x) by the committed encoder (`models/vae/encoder.onnx`, run in tract); samples
//! are scored by decoding them with the committed decoder and measuring the energy distance in
//! local features ([`energy_distance_local`]) to the VAE's held-out glyphs
//! (`models/vae/data/test.npy`), the metric of the VAE and GAN cards.
//!
//! No scale is applied: the VAE's KL term already pulls the aggregate posterior towards
//! N(0, I), so μ has roughly unit variance (the measured figures are in [`LatentStats`]), which
//! is what the diffusion schedule assumes (x_{T−1} ~ N(0, I)). The `decode` entry of the device
//! file is therefore the VAE's decoder itself.
//!
//! ```no_run
//! use mote_converters::zoo::diffusion::DiffusionData;
//! use mote_converters::zoo::ldm::LatentGlyphs;
//! let data = LatentGlyphs::load(std::path::Path::new("models/vae"))?;
//! println!("{} latents of {} values, σ(μ) = {:.3}", data.train_set().len(), data.dim(), data.stats().mu_std);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::array::Array;
use crate::verify::tract_reference;
use crate::zoo::diffusion::{DiffusionData, Labelled};
use crate::zoo::vae::glyphs::{energy_distance_local, glyphs, Glyphs, GLYPH_CLASSES, PIXELS, SIDE};
use crate::zoo::vae::train::{VaeReport, FLOOR_SEED, TEST_SEED, TRAIN_SEED};

/// Seed of the glyphs whose latents calibrate and test the exported denoisers.
pub const CALIBRATION_SEED: u64 = TRAIN_SEED ^ 0xca1;
/// Glyphs in the calibration set.
pub const CALIBRATION_GLYPHS: usize = 2048;
/// Images per tract call when encoding or decoding.
const CHUNK: usize = 2048;

/// Statistics of the training latents (μ of q(z | x) of the VAE's training glyphs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatentStats {
    /// Training glyphs encoded (the VAE's own training set).
    pub glyphs: usize,
    /// Latent dimension.
    pub dim: usize,
    /// Standard deviation of all μ values together.
    pub mu_std: f64,
    /// Smallest and largest per-dimension standard deviation of μ.
    pub mu_std_range: (f64, f64),
    /// Largest |mean| of a dimension of μ.
    pub mu_mean_abs_max: f64,
    /// Mean posterior standard deviation exp(½ log σ²) over dimensions and glyphs.
    pub posterior_sigma_mean: f64,
}

/// The VAE's glyph latents, labelled by glyph class, with the held-out images the samples are
/// scored against.
#[derive(Clone, Debug)]
pub struct LatentGlyphs {
    vae_dir: PathBuf,
    train: Labelled,
    calibration: Labelled,
    test: Glyphs,
    floor: Vec<f32>,
    stats: LatentStats,
}

/// Runs `onnx` (one f32 input of rows of `width` values, shaped `[n, ..shape]`) over `rows` in
/// chunks, returning each output's values.
fn run_chunked(onnx: &Path, rows: &[f32], width: usize, shape: &[usize]) -> Result<Vec<Vec<f32>>> {
    ensure!(width > 0 && rows.len().is_multiple_of(width), "{} values are not rows of {width}", rows.len());
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for chunk in rows.chunks(CHUNK * width) {
        let mut dims = vec![chunk.len() / width];
        dims.extend_from_slice(shape);
        let got = tract_reference(onnx, &[Array::f32(dims, chunk.to_vec())])?;
        outs.resize(got.len(), Vec::new());
        for (o, a) in outs.iter_mut().zip(got) {
            o.extend(a.to_f32());
        }
    }
    Ok(outs)
}

/// `(μ, log σ²)` of q(z | x) for `images` (256 pixels each) by the encoder `encoder.onnx`.
pub fn encode(encoder: &Path, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut out = run_chunked(encoder, images, PIXELS, &[1, SIDE, SIDE])?;
    if out.len() != 2 {
        bail!("{}: an encoder has two outputs (mu, logvar), this one {}", encoder.display(), out.len());
    }
    let logvar = out.pop().unwrap_or_default();
    Ok((out.pop().unwrap_or_default(), logvar))
}

/// Images (256 pixels each) of latents `z` (`dim` values each) by the decoder `decoder.onnx`.
pub fn decode(decoder: &Path, z: &[f32], dim: usize) -> Result<Vec<f32>> {
    run_chunked(decoder, z, dim, &[dim])?.into_iter().next().context("a decoder without outputs")
}

/// The held-out glyphs of the VAE folder: `data/test.npy` with the labels of the glyph draw it
/// holds (seed [`TEST_SEED`]); an error when the file is not that draw.
pub fn held_out(vae_dir: &Path) -> Result<Glyphs> {
    let path = vae_dir.join("data/test.npy");
    let images = Array::read_npy(&path)?.to_f32();
    ensure!(!images.is_empty() && images.len() % PIXELS == 0, "{}: not a set of 16×16 images", path.display());
    let drawn = glyphs(images.len() / PIXELS, TEST_SEED);
    let worst = images.iter().zip(&drawn.images).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    ensure!(worst < 1e-6, "{} is not the glyph draw of seed {TEST_SEED:#x} ({worst} apart)", path.display());
    Ok(Glyphs { images, labels: drawn.labels })
}

fn stats(mu: &[f32], logvar: &[f32], dim: usize) -> LatentStats {
    let n = mu.len() / dim.max(1);
    let mean = |d: usize| mu.iter().skip(d).step_by(dim).map(|&v| v as f64).sum::<f64>() / n.max(1) as f64;
    let std = |d: usize, m: f64| {
        (mu.iter().skip(d).step_by(dim).map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt()
    };
    let means: Vec<f64> = (0..dim).map(mean).collect();
    let stds: Vec<f64> = (0..dim).map(|d| std(d, means[d])).collect();
    let all_mean = mu.iter().map(|&v| v as f64).sum::<f64>() / mu.len().max(1) as f64;
    let all_std = (mu.iter().map(|&v| (v as f64 - all_mean).powi(2)).sum::<f64>() / mu.len().max(1) as f64).sqrt();
    LatentStats {
        glyphs: n,
        dim,
        mu_std: all_std,
        mu_std_range: stds.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s))),
        mu_mean_abs_max: means.iter().fold(0f64, |m, v| m.max(v.abs())),
        posterior_sigma_mean: logvar.iter().map(|&l| (0.5 * l as f64).exp()).sum::<f64>() / logvar.len().max(1) as f64,
    }
}

impl LatentGlyphs {
    /// Encodes the VAE's training glyphs (its `train_report.json` says which) and the
    /// calibration glyphs with `vae_dir/encoder.onnx`, and reads the held-out glyphs.
    pub fn load(vae_dir: &Path) -> Result<Self> {
        let report = VaeReport::read(vae_dir)?;
        let dim = report.options.config.latent;
        let encoder = vae_dir.join("encoder.onnx");
        let labelled = |g: &Glyphs| -> Result<(Labelled, Vec<f32>)> {
            let (mu, logvar) = encode(&encoder, &g.images)?;
            ensure!(mu.len() == g.len() * dim, "{}: μ is not {dim} values per image", encoder.display());
            Ok((Labelled::new(dim, mu, g.labels.iter().map(|&l| l as usize).collect())?, logvar))
        };
        let (train, logvar) = labelled(&report.options.train_set())?;
        let stats = stats(&train.values, &logvar, dim);
        let (calibration, _) = labelled(&glyphs(CALIBRATION_GLYPHS, CALIBRATION_SEED))?;
        let test = held_out(vae_dir)?;
        let floor = glyphs(test.len(), FLOOR_SEED).images;
        Ok(Self { vae_dir: vae_dir.to_path_buf(), train, calibration, test, floor, stats })
    }

    /// The statistics of the training latents.
    pub fn stats(&self) -> &LatentStats {
        &self.stats
    }

    /// The held-out glyphs (the VAE's `data/test.npy`, labelled).
    pub fn test(&self) -> &Glyphs {
        &self.test
    }

    /// The VAE's decoder (`decoder.onnx`), the `decode` entry of the device file.
    pub fn decoder(&self) -> PathBuf {
        self.vae_dir.join("decoder.onnx")
    }

    /// Images of latents `z`, decoded in tract.
    pub fn decode(&self, z: &[f32]) -> Result<Vec<f32>> {
        decode(&self.decoder(), z, self.dim())
    }

    /// Number of glyph classes (the null class id of the denoiser).
    pub fn classes(&self) -> usize {
        GLYPH_CLASSES.len()
    }
}

impl DiffusionData for LatentGlyphs {
    fn family(&self) -> &str {
        "ldm"
    }

    fn train_set(&self) -> &Labelled {
        &self.train
    }

    fn calibration_set(&self) -> &Labelled {
        &self.calibration
    }

    fn quality_samples(&self) -> usize {
        self.test.len()
    }

    /// Energy distance in local features of the decoded samples to the held-out glyphs.
    fn quality(&self, samples: &[f32]) -> Result<f64> {
        Ok(energy_distance_local(&self.decode(samples)?, &self.test.images))
    }

    fn floor(&self) -> Result<f64> {
        Ok(energy_distance_local(&self.floor, &self.test.images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_measure_spread_and_offsets() {
        // Two dimensions: ±1 (std 1, mean 0) and 3 + ±0.5 (std 0.5, mean 3).
        let mu = [1.0, 3.5, -1.0, 2.5, 1.0, 3.5, -1.0, 2.5];
        let s = stats(&mu, &[0.0; 8], 2);
        assert_eq!((s.glyphs, s.dim), (4, 2));
        assert!((s.mu_std_range.0 - 0.5).abs() < 1e-12 && (s.mu_std_range.1 - 1.0).abs() < 1e-12);
        assert!((s.mu_mean_abs_max - 3.0).abs() < 1e-12);
        assert!((s.posterior_sigma_mean - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_missing_vae_is_an_error() {
        let missing = std::env::temp_dir().join("mote-no-vae-here");
        assert!(LatentGlyphs::load(&missing).is_err());
        assert!(held_out(&missing).is_err());
        assert!(run_chunked(&missing, &[0.0; 3], 2, &[2]).is_err());
    }
}
