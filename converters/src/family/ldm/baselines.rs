//! What the `ldm` figures are compared with, in the same metric on the same held-out glyphs:
//! fresh glyphs (the floor), the VAE's reconstructions of fresh glyphs (the best a model
//! decoded by this decoder can reach), the VAE's own prior samples, Gaussians fitted to the
//! latents (one for all, one per class) and the GAN; and the classifier's accuracy on real and
//! on reconstructed glyphs.

use super::LdmDir;
use crate::zoo::diffusion::DiffusionData;
use crate::zoo::ldm::LatentGlyphs;
use crate::zoo::rng::SplitMix64;
use crate::zoo::vae::glyphs::{energy_distance_local, glyphs, GLYPH_CLASSES, PIXELS};
use crate::zoo::vae::train::{gaussians, FLOOR_SEED, LATENT_SEED};
use anyhow::{ensure, Result};
use serde::Serialize;

/// Seed of the fitted Gaussians' samples.
const GAUSSIAN_SEED: u64 = 0x6a55;

/// A multivariate normal fitted to rows (mean and Cholesky factor of the covariance).
#[derive(Debug, Clone)]
pub struct LatentGaussian {
    mean: Vec<f64>,
    chol: Vec<f64>,
    dim: usize,
}

impl LatentGaussian {
    /// Fits mean and covariance of `rows` (`dim` values each); the covariance gets 1e-6 on its
    /// diagonal so that it factors.
    pub fn fit(rows: &[f32], dim: usize) -> Result<Self> {
        ensure!(dim > 0 && rows.len() >= 2 * dim && rows.len().is_multiple_of(dim), "too few rows to fit a Gaussian");
        let n = (rows.len() / dim) as f64;
        let mut mean = vec![0f64; dim];
        for r in rows.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64 / n;
            }
        }
        let mut cov = vec![0f64; dim * dim];
        for r in rows.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    cov[i * dim + j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]) / n;
                }
            }
        }
        let mut chol = vec![0f64; dim * dim];
        for i in 0..dim {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| chol[i * dim + k] * chol[j * dim + k]).sum();
                if i == j {
                    let d = cov[i * dim + i] + 1e-6 - s;
                    ensure!(d > 0.0, "covariance not positive definite");
                    chol[i * dim + i] = d.sqrt();
                } else {
                    chol[i * dim + j] = (cov[i * dim + j] - s) / chol[j * dim + j];
                }
            }
        }
        Ok(Self { mean, chol, dim })
    }

    /// `n` samples (flattened rows) from `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        let d = self.dim;
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let e: Vec<f64> = (0..d).map(|_| r.normal()).collect();
            for i in 0..d {
                out.push((self.mean[i] + (0..=i).map(|k| self.chol[i * d + k] * e[k]).sum::<f64>()) as f32);
            }
        }
        out
    }
}

/// The baselines; see the module docs.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Fresh glyphs.
    pub floor: f64,
    /// The VAE's reconstructions decode(μ(x)) of fresh glyphs.
    pub vae_reconstruction: f64,
    /// The VAE's prior samples: N(0, I) latents (the VAE card's seed) decoded.
    pub vae_prior: f64,
    /// Samples of one Gaussian fitted to the training latents, decoded.
    pub latent_gaussian: f64,
    /// Samples of per-class Gaussians fitted to each class's latents, decoded, all classes.
    pub class_gaussians: f64,
    /// The classifier's accuracy on the class-Gaussian samples (the class each was drawn for).
    pub class_gaussians_accuracy: f64,
    /// The GAN's samples (`models/gan/generator.onnx` on the GAN card's latents), if present.
    pub gan: Option<f64>,
    /// The classifier's accuracy on the held-out glyphs.
    pub knn_real: f64,
    /// The classifier's accuracy on the VAE's reconstructions of the held-out glyphs: about the
    /// most that decoded samples can reach.
    pub knn_reconstructed: f64,
    /// Decoded samples for the plots: VAE prior, VAE reconstructions (not serialised).
    #[serde(skip)]
    pub images: Vec<(String, Vec<f32>)>,
}

impl Baselines {
    /// Measures every baseline of the folder `d`.
    pub fn measure(d: &LdmDir) -> Result<Self> {
        let data = LatentGlyphs::load(d.vae())?;
        let test = &d.test.images;
        let n = d.test.len();
        let dim = data.dim();
        let fresh = glyphs(n, FLOOR_SEED);
        let encoder = d.vae().join("encoder.onnx");
        let (mu, _) = crate::zoo::ldm::latents::encode(&encoder, &fresh.images)?;
        let recon = data.decode(&mu)?;
        let prior = data.decode(&gaussians(n, dim, LATENT_SEED))?;
        let train = data.train_set();
        let gauss = data.decode(&LatentGaussian::fit(&train.values, dim)?.sample(n, GAUSSIAN_SEED))?;
        let per = n.div_ceil(GLYPH_CLASSES.len());
        let mut class_images = Vec::new();
        for c in 0..GLYPH_CLASSES.len() {
            let rows: Vec<f32> =
                (0..train.len()).filter(|&i| train.labels[i] == c).flat_map(|i| train.row(i).to_vec()).collect();
            let g = LatentGaussian::fit(&rows, dim)?;
            class_images.push(data.decode(&g.sample(per, GAUSSIAN_SEED + c as u64))?);
        }
        let class_all: Vec<f32> = class_images.concat();
        let hits: usize = class_images
            .iter()
            .enumerate()
            .map(|(c, ims)| ims.chunks_exact(PIXELS).filter(|im| d.knn.classify(im) == c).count())
            .sum();
        let (test_mu, _) = crate::zoo::ldm::latents::encode(&encoder, test)?;
        let test_recon = data.decode(&test_mu)?;
        let label = |i: usize| d.test.labels[i] as usize;
        Ok(Self {
            floor: data.floor()?,
            vae_reconstruction: energy_distance_local(&recon, test),
            vae_prior: energy_distance_local(&prior, test),
            latent_gaussian: energy_distance_local(&gauss, test),
            class_gaussians: energy_distance_local(&class_all, test),
            class_gaussians_accuracy: hits as f64 / (class_all.len() / PIXELS).max(1) as f64,
            gan: gan_energy(d, test)?,
            knn_real: d.knn.accuracy(test, label),
            knn_reconstructed: d.knn.accuracy(&test_recon, label),
            images: vec![("VAE prior".into(), prior), ("VAE reconstructions".into(), recon)],
        })
    }
}

/// The GAN's samples of the GAN card (latents of [`LATENT_SEED`]) in local features against
/// `test`, when `models/gan` sits next to the VAE.
fn gan_energy(d: &LdmDir, test: &[f32]) -> Result<Option<f64>> {
    let Some(gan) = d.vae().parent().map(|p| p.join("gan")) else { return Ok(None) };
    let onnx = gan.join("generator.onnx");
    if !onnx.exists() {
        return Ok(None);
    }
    let latent = crate::zoo::gan::GanReport::read(&gan)?.options.config.latent;
    let n = test.len() / PIXELS;
    let z = crate::array::Array::f32(vec![n, latent], gaussians(n, latent, LATENT_SEED));
    let images = crate::verify::tract_reference(&onnx, &[z])?.remove(0).to_f32();
    Ok(Some(energy_distance_local(&images, test)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_gaussian_reproduces_mean_and_covariance() -> Result<()> {
        // Rows (a, 2a + 0.5b + 3) with a, b ~ N(0, 1): var 1 and 4.25, covariance 2.
        let mut r = SplitMix64::new(5);
        let rows: Vec<f32> = (0..20000)
            .flat_map(|_| {
                let (a, b) = (r.normal(), r.normal());
                [a as f32, (2.0 * a + 0.5 * b + 3.0) as f32]
            })
            .collect();
        let g = LatentGaussian::fit(&rows, 2)?;
        let s = g.sample(20000, 9);
        let m1 = s.iter().skip(1).step_by(2).map(|&v| v as f64).sum::<f64>() / 20000.0;
        let cov: f64 = s.chunks_exact(2).map(|p| p[0] as f64 * (p[1] as f64 - m1)).sum::<f64>() / 20000.0;
        assert!((m1 - 3.0).abs() < 0.05 && (cov - 2.0).abs() < 0.1, "mean {m1}, covariance {cov}");
        assert!(LatentGaussian::fit(&rows[..2], 2).is_err());
        Ok(())
    }
}
