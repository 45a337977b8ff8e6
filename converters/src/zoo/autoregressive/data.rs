//! `moons8`: the 8-D procedural data set of the autoregressive flows, and the D-dimensional
//! baselines and metrics ([`crate::zoo::toy2d`] covers 2-D only).
//!
//! Coordinates 0 and 1 are standardised two moons ([`toy2d::two_moons`], noise
//! [`MOONS_NOISE`]); the other six are nonlinear functions of them and of each other plus
//! Gaussian noise of standard deviation [`EXTRA_NOISE`] (`ε` fresh per coordinate):
//!
//! | | |
//! |---|---|
//! | `x2` | `0.8·x0 − 0.6·x1 + ε` |
//! | `x3` | `x0·x1 + ε` |
//! | `x4` | `sin(1.5·x0) + ε` |
//! | `x5` | `x1² − 1 + ε` |
//! | `x6` | `(x2 + x4)/2 + ε` |
//! | `x7` | `tanh(2·x1) − x3/2 + ε` |
//!
//! ```
//! use mote_converters::zoo::autoregressive::data::{energy_distance, gaussian_baseline_nll, moons8, DIM};
//! let train = moons8(2000, 1);
//! let test = moons8(500, 2);
//! assert_eq!(train.len(), 2000 * DIM);
//! assert!(gaussian_baseline_nll(&train, &test, DIM) < 1.5);
//! assert_eq!(energy_distance(&test, &test, DIM), 0.0);
//! ```

use crate::zoo::rng::SplitMix64;
use crate::zoo::toy2d::{self, Point};

/// Dimension of `moons8`.
pub const DIM: usize = 8;
/// Noise of the two-moons coordinates (before standardisation).
pub const MOONS_NOISE: f32 = 0.1;
/// Noise of the six derived coordinates.
pub const EXTRA_NOISE: f64 = 0.2;
/// Seed of the training set.
pub const TRAIN_SEED: u64 = 0x7a11;
/// Seed of the test set (NLL).
pub const TEST_SEED: u64 = 0x7e57;
/// Seed of the held-out set (energy distance of samples).
pub const HELDOUT_SEED: u64 = 0x4e1d;

/// `n` points of `moons8`, row-major `[n, 8]`.
pub fn moons8(n: usize, seed: u64) -> Vec<f32> {
    let moons = toy2d::two_moons(n, MOONS_NOISE, seed);
    let mut rng = SplitMix64::new(seed ^ 0x8d8d_8d8d);
    let mut out = Vec::with_capacity(n * DIM);
    for [a, b] in moons {
        let (a, b) = (f64::from(a), f64::from(b));
        let mut e = || rng.normal() * EXTRA_NOISE;
        let x2 = 0.8 * a - 0.6 * b + e();
        let x3 = a * b + e();
        let x4 = (1.5 * a).sin() + e();
        let x5 = b * b - 1.0 + e();
        let x6 = 0.5 * (x2 + x4) + e();
        let x7 = (2.0 * b).tanh() - 0.5 * x3 + e();
        out.extend([a, b, x2, x3, x4, x5, x6, x7].map(|v| v as f32));
    }
    out
}

/// Coordinates 0 and 1 of each row of `points [n, dim]` (the moons, for scatter plots).
pub fn first_two(points: &[f32], dim: usize) -> Vec<Point> {
    points.chunks_exact(dim).map(|r| [r[0], r[1]]).collect()
}

/// A full-covariance Gaussian fitted by maximum likelihood in `dim` dimensions.
#[derive(Debug, Clone)]
pub struct GaussianNd {
    /// Mean.
    pub mean: Vec<f64>,
    /// Lower Cholesky factor `L` of the covariance (`Σ = L Lᵀ`), row-major `[dim, dim]`.
    pub chol: Vec<f64>,
    dim: usize,
}

impl GaussianNd {
    /// The maximum-likelihood fit (covariance divided by n) to `points [n, dim]`.
    pub fn fit(points: &[f32], dim: usize) -> Self {
        let n = (points.len() / dim).max(1) as f64;
        let mut mean = vec![0f64; dim];
        for r in points.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += f64::from(v) / n;
            }
        }
        let mut cov = vec![0f64; dim * dim];
        for r in points.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    cov[i * dim + j] += (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]) / n;
                }
            }
        }
        let mut chol = vec![0f64; dim * dim];
        for i in 0..dim {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| chol[i * dim + k] * chol[j * dim + k]).sum();
                chol[i * dim + j] = if i == j {
                    (cov[i * dim + i] - s).max(1e-12).sqrt()
                } else {
                    (cov[i * dim + j] - s) / chol[j * dim + j]
                };
            }
        }
        Self { mean, chol, dim }
    }

    /// Log-density of one point (nats).
    pub fn log_prob(&self, p: &[f32]) -> f64 {
        let d = self.dim;
        // Solve L y = p − mean by forward substitution; log N = −|y|²/2 − Σ ln L_ii − d/2 ln 2π.
        let mut y = vec![0f64; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|k| self.chol[i * d + k] * y[k]).sum();
            y[i] = (f64::from(p[i]) - self.mean[i] - s) / self.chol[i * d + i];
        }
        let logdet: f64 = (0..d).map(|i| self.chol[i * d + i].ln()).sum();
        -0.5 * y.iter().map(|v| v * v).sum::<f64>() - logdet - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
    }

    /// Mean NLL of `points [n, dim]` in nats per dimension.
    pub fn nll_per_dim(&self, points: &[f32]) -> f64 {
        let n = points.len() / self.dim;
        -points.chunks_exact(self.dim).map(|p| self.log_prob(p)).sum::<f64>() / (n.max(1) * self.dim) as f64
    }

    /// `n` samples `mean + L ε` from a seeded [`SplitMix64`], row-major `[n, dim]`.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let d = self.dim;
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let e: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
            for i in 0..d {
                out.push((self.mean[i] + (0..=i).map(|k| self.chol[i * d + k] * e[k]).sum::<f64>()) as f32);
            }
        }
        out
    }
}

/// The Gaussian baseline in `dim` dimensions: fit on `train`, mean NLL on `test` (nats/dim).
pub fn gaussian_baseline_nll(train: &[f32], test: &[f32], dim: usize) -> f64 {
    GaussianNd::fit(train, dim).nll_per_dim(test)
}

fn mean_dist(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let mut sum = 0f64;
    for p in a.chunks_exact(dim) {
        for q in b.chunks_exact(dim) {
            let d2: f32 = p.iter().zip(q).map(|(x, y)| (x - y) * (x - y)).sum();
            sum += f64::from(d2).sqrt();
        }
    }
    sum / ((a.len() / dim).max(1) * (b.len() / dim).max(1)) as f64
}

/// The energy distance `2E|X−Y| − E|X−X'| − E|Y−Y'|` between the empirical distributions of
/// `a [n, dim]` and `b [m, dim]` (V-statistic: `D(a, a) = 0`); the D-dimensional version of
/// [`toy2d::energy_distance`].
pub fn energy_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    2.0 * mean_dist(a, b, dim) - mean_dist(a, a, dim) - mean_dist(b, b, dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_fit_recovers_a_known_density() {
        let g = GaussianNd::fit(&GaussianNd::fit(&moons8(4000, 1), DIM).sample(20000, 3), DIM);
        let train = moons8(4000, 1);
        let g0 = GaussianNd::fit(&train, DIM);
        for (a, b) in g.mean.iter().zip(&g0.mean) {
            assert!((a - b).abs() < 0.05, "{a} {b}");
        }
        // In 2-D it agrees with toy2d's closed form.
        let two: Vec<f32> = toy2d::flatten(&first_two(&train, DIM));
        let test = moons8(500, 2);
        let t2: Vec<f32> = toy2d::flatten(&first_two(&test, DIM));
        let want = toy2d::gaussian_baseline_nll(&first_two(&train, DIM), &first_two(&test, DIM));
        assert!((gaussian_baseline_nll(&two, &t2, 2) - want).abs() < 1e-9);
        let e2 = energy_distance(&two, &t2, 2);
        let want = toy2d::energy_distance(&first_two(&train, DIM), &first_two(&test, DIM));
        assert!((e2 - want).abs() < 1e-6, "{e2} {want}");
    }
}
