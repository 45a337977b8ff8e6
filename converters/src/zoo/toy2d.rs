//! A 2-D toolkit for the density-model families (normalizing flows): procedural data sets,
//! a full-covariance Gaussian baseline, the energy distance between sample sets and a small
//! scatter-plot PNG writer.
//!
//! Every data set is seeded ([`SplitMix64`]) and standardised by fixed, analytic constants
//! (not by the sample's own statistics), so train, test and held-out splits drawn with
//! different seeds live in the same coordinates.
//!
//! ```
//! use mote_converters::zoo::toy2d::{energy_distance, gaussian_baseline_nll, two_moons};
//! let train = two_moons(2000, 0.05, 1);
//! let test = two_moons(500, 0.05, 2);
//! let nll = gaussian_baseline_nll(&train, &test);
//! assert!(nll > 0.5 && nll < 2.0);
//! assert!(energy_distance(&test, &test) < 1e-12);
//! ```

use std::io::BufWriter;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::rng::SplitMix64;

/// One 2-D point.
pub type Point = [f32; 2];

/// `ln(2π)`.
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The two-moons data set: `n` points, half on the upper moon `(cos t, sin t)` and half on
/// the lower one `(1 - cos t, 1/2 - sin t)`, `t` uniform in `[0, π]`, plus isotropic Gaussian
/// noise of standard deviation `noise`; then standardised with the distribution's analytic
/// mean `(1/2, 1/4)` and per-axis standard deviations `sqrt(3/4 + noise²)` and
/// `sqrt(9/16 - 1/π + noise²)` ([`moons_scale`]), so each coordinate has mean 0 and variance 1
/// in expectation whatever the seed. Points alternate
/// between the moons (even index: upper).
pub fn two_moons(n: usize, noise: f32, seed: u64) -> Vec<Point> {
    let mut rng = SplitMix64::new(seed);
    let (sx, sy) = moons_scale(noise as f64);
    (0..n)
        .map(|i| {
            let t = rng.unit_f64() * std::f64::consts::PI;
            let (x, y) = if i % 2 == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
            let x = x + rng.normal() * noise as f64;
            let y = y + rng.normal() * noise as f64;
            [((x - 0.5) / sx) as f32, ((y - 0.25) / sy) as f32]
        })
        .collect()
}

/// Analytic per-axis standard deviations of two moons with isotropic noise `noise`.
///
/// x: the moons' x coordinates `cos t` and `1 - cos t` have second moments 1/2 and 3/2 around
/// 0, so `E[x²] = 1`, mean 1/2, variance 3/4. y: `sin t` has mean `2/π`, second moment 1/2;
/// `1/2 - sin t` has mean `1/2 - 2/π`, second moment `3/4 - 2/π`; the mixture has mean 1/4 and
/// `E[y²] = 5/8 - 1/π`, so variance `9/16 - 1/π`.
pub fn moons_scale(noise: f64) -> (f64, f64) {
    let n2 = noise * noise;
    ((0.75 + n2).sqrt(), (0.5625 - std::f64::consts::FRAC_1_PI + n2).sqrt())
}

/// Radii of the [`rings`] data set, before standardisation.
pub const RING_RADII: [f64; 3] = [1.0, 2.0, 3.0];

/// Radial noise (standard deviation) of the [`rings`] data set, before standardisation.
pub const RING_NOISE: f64 = 0.1;

/// Three concentric rings ([`RING_RADII`]) with Gaussian radial noise [`RING_NOISE`]: point
/// `i` lies on ring `i mod 3` at a uniform angle. The set is centred by construction and
/// scaled by the analytic `sqrt(E[r²] / 2)`, so each coordinate has variance 1 in expectation.
pub fn rings(n: usize, seed: u64) -> Vec<Point> {
    let mut rng = SplitMix64::new(seed);
    let k = RING_RADII.len() as f64;
    let er2 = RING_RADII.iter().map(|r| r * r).sum::<f64>() / k + RING_NOISE * RING_NOISE;
    let scale = (er2 / 2.0).sqrt();
    (0..n)
        .map(|i| {
            let r = RING_RADII[i % RING_RADII.len()] + rng.normal() * RING_NOISE;
            let a = rng.unit_f64() * std::f64::consts::TAU;
            [(r * a.cos() / scale) as f32, (r * a.sin() / scale) as f32]
        })
        .collect()
}

/// Flattens points into a row-major `[n, 2]` buffer (the layout of an ONNX `[n, 2]` input).
pub fn flatten(points: &[Point]) -> Vec<f32> {
    points.iter().flat_map(|p| p.iter().copied()).collect()
}

/// The inverse of [`flatten`]: a row-major `[n, 2]` buffer as points (a trailing odd value is
/// dropped).
pub fn unflatten(flat: &[f32]) -> Vec<Point> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// A 2-D Gaussian with full covariance, fitted by maximum likelihood: the baseline every 2-D
/// density model is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian2 {
    /// Mean.
    pub mean: [f64; 2],
    /// Covariance `[[sxx, sxy], [sxy, syy]]` (the maximum-likelihood estimate, divided by n).
    pub cov: [[f64; 2]; 2],
}

impl Gaussian2 {
    /// The maximum-likelihood fit to `points` (at least two, not all collinear).
    pub fn fit(points: &[Point]) -> Self {
        let n = points.len().max(1) as f64;
        let mut mean = [0f64; 2];
        for p in points {
            mean[0] += p[0] as f64 / n;
            mean[1] += p[1] as f64 / n;
        }
        let mut cov = [[0f64; 2]; 2];
        for p in points {
            let d = [p[0] as f64 - mean[0], p[1] as f64 - mean[1]];
            for i in 0..2 {
                for j in 0..2 {
                    cov[i][j] += d[i] * d[j] / n;
                }
            }
        }
        Self { mean, cov }
    }

    /// Determinant of the covariance.
    pub fn det(&self) -> f64 {
        self.cov[0][0] * self.cov[1][1] - self.cov[0][1] * self.cov[1][0]
    }

    /// Log-density at `p` (nats).
    pub fn log_prob(&self, p: Point) -> f64 {
        let det = self.det();
        let d = [p[0] as f64 - self.mean[0], p[1] as f64 - self.mean[1]];
        // Σ⁻¹ = [[syy, -sxy], [-sxy, sxx]] / det.
        let m =
            (self.cov[1][1] * d[0] * d[0] - 2.0 * self.cov[0][1] * d[0] * d[1] + self.cov[0][0] * d[1] * d[1]) / det;
        -LN_2PI - 0.5 * det.ln() - 0.5 * m
    }

    /// Mean negative log-likelihood of `points`, in nats per dimension (per coordinate).
    pub fn nll_per_dim(&self, points: &[Point]) -> f64 {
        -points.iter().map(|&p| self.log_prob(p)).sum::<f64>() / (2.0 * points.len().max(1) as f64)
    }

    /// Differential entropy in nats per dimension: `(1 + ln 2π) / 2 + ln det Σ / 4`.
    pub fn entropy_per_dim(&self) -> f64 {
        0.5 * (1.0 + LN_2PI) + 0.25 * self.det().ln()
    }

    /// `n` samples drawn with a seeded [`SplitMix64`]: `mean + L ε` with `L` the Cholesky factor
    /// of the covariance and `ε` standard normal.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<Point> {
        let mut rng = SplitMix64::new(seed);
        let l00 = self.cov[0][0].sqrt();
        let l10 = self.cov[1][0] / l00;
        let l11 = (self.cov[1][1] - l10 * l10).max(0.0).sqrt();
        (0..n)
            .map(|_| {
                let (e0, e1) = (rng.normal(), rng.normal());
                [(self.mean[0] + l00 * e0) as f32, (self.mean[1] + l10 * e0 + l11 * e1) as f32]
            })
            .collect()
    }
}

/// The Gaussian baseline: fits a full-covariance 2-D Gaussian on `train` by maximum
/// likelihood and returns its mean NLL on `test` in nats per dimension.
pub fn gaussian_baseline_nll(train: &[Point], test: &[Point]) -> f64 {
    Gaussian2::fit(train).nll_per_dim(test)
}

/// Euclidean distance in f64.
fn dist(a: Point, b: Point) -> f64 {
    let dx = a[0] as f64 - b[0] as f64;
    let dy = a[1] as f64 - b[1] as f64;
    (dx * dx + dy * dy).sqrt()
}

/// Mean pairwise distance `E|X - Y|` over all `|a|·|b|` pairs.
fn mean_dist(a: &[Point], b: &[Point]) -> f64 {
    let mut sum = 0f64;
    for &p in a {
        for &q in b {
            sum += dist(p, q);
        }
    }
    sum / (a.len().max(1) * b.len().max(1)) as f64
}

/// The energy distance (Székely & Rizzo's E-statistic) between the empirical distributions of
/// `a` and `b`:
///
/// `D(a, b) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`, with `X, X'` drawn from `a`, `Y, Y'` from
/// `b` and `|·|` the Euclidean norm.
///
/// All three expectations average over every pair, including `i = j` (the V-statistic), so
/// `D(a, a) = 0` exactly and `D(a, b) ≥ 0`; it is zero only when the two empirical
/// distributions are equal. It is `O(|a|·|b| + |a|² + |b|²)` in time. Two independent samples
/// of the same distribution give a small positive value that shrinks like `1/n`, so compare
/// models with sets of the same sizes.
pub fn energy_distance(a: &[Point], b: &[Point]) -> f64 {
    2.0 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)
}

/// One set of points in a scatter plot and its RGB colour.
pub type ScatterSet<'a> = (&'a [Point], [u8; 3]);

/// Writes a scatter plot of `sets` to a PNG at `path`: a `size`×`size` white panel showing
/// the square `[-extent, extent]²`, light grey axes through the origin and a grid line every
/// unit, each point a 2×2 dot in its set's colour (later sets drawn on top). Points outside
/// the square are skipped.
pub fn scatter_png(path: &Path, sets: &[ScatterSet<'_>], size: u32, extent: f32) -> Result<()> {
    scatter_panels_png(path, &[sets], size, extent)
}

/// Like [`scatter_png`], with several panels side by side (left to right), separated by a
/// 4-pixel grey gutter: e.g. data, model samples and baseline samples.
pub fn scatter_panels_png(path: &Path, panels: &[&[ScatterSet<'_>]], size: u32, extent: f32) -> Result<()> {
    if size < 8 || panels.is_empty() || extent <= 0.0 {
        return Err(anyhow!("scatter_png: need size ≥ 8, extent > 0 and at least one panel"));
    }
    let gutter = 4u32;
    let np = panels.len() as u32;
    let (w, h) = (np * size + (np - 1) * gutter, size);
    let mut img = vec![255u8; (w * h * 3) as usize];
    let put = |img: &mut [u8], x: u32, y: u32, c: [u8; 3]| {
        if x < w && y < h {
            let o = ((y * w + x) * 3) as usize;
            img[o..o + 3].copy_from_slice(&c);
        }
    };
    let to_px = |v: f32| ((v + extent) / (2.0 * extent) * (size - 1) as f32).round();
    for (k, sets) in panels.iter().enumerate() {
        let x0 = k as u32 * (size + gutter);
        // Grid every unit, axes darker, frame.
        let mut u = -(extent.floor());
        while u <= extent {
            let p = to_px(u);
            let c = if u == 0.0 { [190, 190, 190] } else { [235, 235, 235] };
            if (0.0..size as f32).contains(&p) {
                for t in 0..size {
                    put(&mut img, x0 + p as u32, t, c);
                    put(&mut img, x0 + t, size - 1 - p as u32, c);
                }
            }
            u += 1.0;
        }
        for t in 0..size {
            for (x, y) in [(0, t), (size - 1, t), (t, 0), (t, size - 1)] {
                put(&mut img, x0 + x, y, [120, 120, 120]);
            }
        }
        for &(points, colour) in sets.iter() {
            for p in points.iter() {
                if !(p[0].abs() < extent && p[1].abs() < extent) {
                    continue;
                }
                let (px, py) = (to_px(p[0]) as u32, size - 1 - to_px(p[1]) as u32);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    if px + dx < size && py + dy < size {
                        put(&mut img, x0 + px + dx, py + dy, colour);
                    }
                }
            }
        }
    }
    for x in (0..np - 1).flat_map(|k| (0..gutter).map(move |g| k * (size + gutter) + size + g)) {
        for y in 0..h {
            put(&mut img, x, y, [200, 200, 200]);
        }
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&img)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(points: &[Point]) -> ([f64; 2], [f64; 2]) {
        let g = Gaussian2::fit(points);
        (g.mean, [g.cov[0][0], g.cov[1][1]])
    }

    #[test]
    fn data_sets_are_seeded_and_standardised() {
        assert_eq!(two_moons(100, 0.05, 3), two_moons(100, 0.05, 3));
        assert_ne!(two_moons(100, 0.05, 3), two_moons(100, 0.05, 4));
        for points in [two_moons(40_000, 0.05, 1), rings(40_000, 1)] {
            let (mean, var) = moments(&points);
            for d in 0..2 {
                assert!(mean[d].abs() < 0.02, "mean {mean:?}");
                assert!((var[d] - 1.0).abs() < 0.03, "var {var:?}");
            }
        }
        // Ring radii are the standardised RING_RADII.
        let r = rings(3000, 2);
        let scale = ((1.0 + 4.0 + 9.0) / 3.0 + RING_NOISE * RING_NOISE).sqrt() / 2f64.sqrt();
        for (i, p) in r.iter().enumerate() {
            let radius = (p[0] as f64).hypot(p[1] as f64) * scale;
            assert!((radius - RING_RADII[i % 3]).abs() < 6.0 * RING_NOISE, "{radius}");
        }
    }

    #[test]
    fn gaussian_nll_on_gaussian_data_matches_the_entropy() {
        let truth = Gaussian2 { mean: [0.5, -1.0], cov: [[2.0, 0.6], [0.6, 0.5]] };
        let train = truth.sample(20_000, 1);
        let test = truth.sample(20_000, 2);
        let fit = Gaussian2::fit(&train);
        for (a, b) in fit.cov.iter().flatten().zip(truth.cov.iter().flatten()) {
            assert!((a - b).abs() < 0.05, "{:?}", fit.cov);
        }
        let nll = gaussian_baseline_nll(&train, &test);
        let h = truth.entropy_per_dim();
        assert!((nll - h).abs() < 0.02, "nll {nll} entropy {h}");
        // Standard normal: entropy (1 + ln 2π) / 2 per dim.
        let std = Gaussian2 { mean: [0.0; 2], cov: [[1.0, 0.0], [0.0, 1.0]] };
        assert!((std.entropy_per_dim() - 1.418_938_533).abs() < 1e-8);
        assert!((std.log_prob([0.0, 0.0]) + LN_2PI).abs() < 1e-12);
    }

    #[test]
    fn moons_baseline_is_the_fitted_entropy() {
        // Standardised moons have unit variances and correlation ≈ -0.45 (before scaling,
        // cov(x, y) = E[xy] - 1/8 = 1/8 - 1/π ≈ -0.19), so the fitted Gaussian's NLL is its
        // own entropy, below the standard normal's 1.4189.
        let train = two_moons(8000, 0.05, 1);
        let fit = Gaussian2::fit(&train);
        let nll = gaussian_baseline_nll(&train, &two_moons(4000, 0.05, 2));
        assert!((nll - fit.entropy_per_dim()).abs() < 0.03, "{nll} vs {}", fit.entropy_per_dim());
        assert!(nll > 1.25 && nll < 1.41, "{nll}");
    }

    #[test]
    fn energy_distance_separates_distributions() {
        let a = two_moons(400, 0.05, 1);
        let b = two_moons(400, 0.05, 2);
        assert_eq!(energy_distance(&a, &a), 0.0);
        let same = energy_distance(&a, &b);
        let shifted: Vec<Point> = a.iter().map(|p| [p[0] + 0.5, p[1]]).collect();
        let moved = energy_distance(&a, &shifted);
        let gauss = energy_distance(&b, &Gaussian2::fit(&a).sample(400, 3));
        assert!((0.0..0.02).contains(&same), "{same}");
        assert!(moved > 10.0 * same, "{moved} vs {same}");
        assert!(gauss > 2.0 * same, "{gauss} vs {same}");
        assert!((energy_distance(&a, &b) - energy_distance(&b, &a)).abs() < 1e-12);
        // Two point masses at distance d: D = 2d.
        assert!((energy_distance(&[[0.0, 0.0]], &[[3.0, 4.0]]) - 10.0).abs() < 1e-12);
    }

    #[test]
    fn scatter_png_writes_a_decodable_image() {
        let dir = std::env::temp_dir().join(format!("mote-toy2d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.png");
        let pts = [[0.0f32, 0.0], [1.0, 1.0], [9.0, 9.0]];
        scatter_panels_png(&path, &[&[(&pts, [255, 0, 0])], &[(&pts, [0, 0, 255])]], 64, 2.0).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (64 * 2 + 4, 64));
        let px = |x: u32, y: u32| {
            let o = ((y * info.width + x) * 3) as usize;
            [buf[o], buf[o + 1], buf[o + 2]]
        };
        // (1, 1) maps to pixel (47, 16) in each panel (63 · 3/4 rounded = 47).
        assert_eq!(px(47, 16), [255, 0, 0]);
        assert_eq!(px(68 + 47, 16), [0, 0, 255]);
        assert_eq!(px(5, 5), [255, 255, 255]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
