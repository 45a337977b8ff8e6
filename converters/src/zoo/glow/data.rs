//! The Glow family's data: procedural 16×16 glyphs ([`crate::zoo::vae::glyphs`]) quantised to
//! `b` bits and dequantised with uniform noise into `[-0.5, 0.5)`, the bits-per-dimension
//! conversion, and the full-covariance Gaussian baseline in pixel space.
//!
//! A pixel `p ∈ [0, 1]` becomes the level `q = round((2^b − 1) p)` and then
//! `x = (q + u) / 2^b − ½` with `u ~ U[0, 1)`: the usual dequantisation of `b`-bit images, under
//! which a continuous density's NLL bounds the discrete one ([`bits_per_dim`]). Glow itself
//! trains on 5-bit images to spend its capacity on shapes rather than on the lowest bits.
//!
//! ```
//! use mote_converters::zoo::glow::data::{dequantise, quantise, to_pixels};
//! use mote_converters::zoo::rng::SplitMix64;
//! let q = quantise(&[0.0, 0.5, 1.0], 5);
//! assert_eq!(q, vec![0, 16, 31]);
//! let x = dequantise(&q, 5, &mut SplitMix64::new(1));
//! assert!(x.iter().all(|v| (-0.5..0.5).contains(v)));
//! let back = to_pixels(&x);
//! assert!((back[1] - 0.5).abs() < 2.0 / 32.0);
//! ```

use super::linalg::{cholesky, solve_lower};
use crate::zoo::rng::SplitMix64;

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Quantisation levels `2^bits` (bits clamped to 1..=8).
pub fn levels(bits: u32) -> u32 {
    1 << bits.clamp(1, 8)
}

/// `bits`-bit levels `round((2^bits − 1) p)` of pixels in `[0, 1]` (clamped).
pub fn quantise(pixels: &[f32], bits: u32) -> Vec<u8> {
    let top = (levels(bits) - 1) as f32;
    pixels.iter().map(|&p| (p.clamp(0.0, 1.0) * top).round() as u8).collect()
}

/// Dequantised model inputs `(q + u) / 2^bits − ½`, `u` uniform from `rng`.
pub fn dequantise(q: &[u8], bits: u32, rng: &mut SplitMix64) -> Vec<f32> {
    let l = levels(bits) as f64;
    q.iter().map(|&q| ((q as f64 + rng.unit_f64()) / l - 0.5) as f32).collect()
}

/// Pixels `clamp(x + ½, 0, 1)` of model-space values (samples are displayed and scored so).
pub fn to_pixels(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| (v + 0.5).clamp(0.0, 1.0)).collect()
}

/// Bits per dimension of the `bits`-bit images implied by a continuous NLL in nats per
/// dimension of the dequantised data: `(nll + bits · ln 2) / ln 2`, an upper bound on the
/// discrete model's code length (the dequantisation bound).
pub fn bits_per_dim(nll_nats_per_dim: f64, bits: u32) -> f64 {
    nll_nats_per_dim / std::f64::consts::LN_2 + bits.clamp(1, 8) as f64
}

/// A full-covariance Gaussian over `dim`-vectors, fitted by maximum likelihood: the baseline
/// density every image flow is compared with.
#[derive(Clone, Debug)]
pub struct GaussianNd {
    dim: usize,
    mean: Vec<f64>,
    /// Lower Cholesky factor of the covariance.
    chol: Vec<f64>,
    /// `½ log det Σ`.
    half_log_det: f64,
}

impl GaussianNd {
    /// The maximum-likelihood fit to `data` (rows of `dim` values back to back); `None` when the
    /// covariance is singular (fewer rows than dimensions, or a constant coordinate).
    pub fn fit(data: &[f32], dim: usize) -> Option<Self> {
        let n = data.len() / dim.max(1);
        if n == 0 {
            return None;
        }
        let mut mean = vec![0f64; dim];
        for row in data.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0f64; dim * dim];
        let mut d = vec![0f64; dim];
        for row in data.chunks_exact(dim) {
            for (k, &v) in row.iter().enumerate() {
                d[k] = v as f64 - mean[k];
            }
            for i in 0..dim {
                let di = d[i];
                for j in 0..=i {
                    cov[i * dim + j] += di * d[j];
                }
            }
        }
        for i in 0..dim {
            for j in 0..=i {
                let v = cov[i * dim + j] / n as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        let chol = cholesky(&cov, dim)?;
        let half_log_det = (0..dim).map(|i| chol[i * dim + i].ln()).sum();
        Some(Self { dim, mean, chol, half_log_det })
    }

    /// Log-density of one `dim`-vector (nats).
    pub fn log_prob(&self, x: &[f32]) -> f64 {
        let d: Vec<f64> = x.iter().zip(&self.mean).map(|(&v, m)| v as f64 - m).collect();
        let y = solve_lower(&self.chol, &d, self.dim);
        -0.5 * y.iter().map(|v| v * v).sum::<f64>() - self.half_log_det - 0.5 * self.dim as f64 * LN_2PI
    }

    /// Mean negative log-likelihood of the rows of `data`, nats per dimension.
    pub fn nll_per_dim(&self, data: &[f32]) -> f64 {
        let rows = data.chunks_exact(self.dim);
        let n = rows.len().max(1);
        -rows.map(|r| self.log_prob(r)).sum::<f64>() / (n * self.dim) as f64
    }

    /// `n` samples `mean + L ε`, `ε` standard normal from a [`SplitMix64`] seeded with `seed`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        let dim = self.dim;
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let e: Vec<f64> = (0..dim).map(|_| r.normal()).collect();
            for i in 0..dim {
                let v: f64 = (0..=i).map(|k| self.chol[i * dim + k] * e[k]).sum();
                out.push((self.mean[i] + v) as f32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_fit_recovers_a_known_density() {
        // x0 ~ N(1, 4), x1 = x0 / 2 + N(0, 1): Σ = [[4, 2], [2, 2]], det 4.
        let mut r = SplitMix64::new(9);
        let data: Vec<f32> = (0..40_000)
            .flat_map(|_| {
                let a = 1.0 + 2.0 * r.normal();
                [a as f32, (0.5 * a + r.normal()) as f32]
            })
            .collect();
        let g = GaussianNd::fit(&data, 2).unwrap();
        assert!((g.half_log_det - 0.5 * 4f64.ln()).abs() < 0.02, "{}", g.half_log_det);
        // The NLL of the data it was fitted on is its entropy: ½ (1 + ln 2π) + ¼ ln det Σ.
        let want = 0.5 * (1.0 + LN_2PI) + 0.25 * 4f64.ln();
        assert!((g.nll_per_dim(&data) - want).abs() < 0.01);
        let s = g.sample(20_000, 3);
        let refit = GaussianNd::fit(&s, 2).unwrap();
        assert!((refit.half_log_det - g.half_log_det).abs() < 0.03);
        assert!(GaussianNd::fit(&[1.0, 1.0, 1.0, 1.0], 2).is_none(), "singular");
    }

    #[test]
    fn dequantisation_stays_in_its_bin() {
        for bits in [5, 8] {
            let l = levels(bits) as f32;
            let q: Vec<u8> = (0..levels(bits)).map(|v| v as u8).collect();
            let x = dequantise(&q, bits, &mut SplitMix64::new(4));
            for (&v, &y) in q.iter().zip(&x) {
                let lo = v as f32 / l - 0.5;
                assert!(y >= lo && y < lo + 1.0 / l + 1e-7, "{bits} bits, level {v}: {y}");
            }
            assert_eq!(quantise(&to_pixels(&x), bits).len(), q.len());
            // Pixels of a level's bin quantise back to the level (up to the rounding of its top edge).
            let mid: Vec<f32> = q.iter().map(|&v| v as f32 / (l - 1.0)).collect();
            assert_eq!(quantise(&mid, bits), q);
        }
        // A density that spends all its mass uniformly on one bin of every pixel: 0 bits/dim.
        assert!(bits_per_dim(-(32f64.ln()), 5).abs() < 1e-12);
        assert!((bits_per_dim(0.0, 8) - 8.0).abs() < 1e-12);
    }
}
