//! Sample quality as precision and recall against k-nearest-neighbour balls (Kynkäänniemi et al.,
//! 2019, "Improved precision and recall metric for assessing generative models"), here in pixel
//! space: the real images' manifold is the union of balls around each real image reaching its
//! k-th nearest real neighbour; **precision** is the fraction of samples inside it (are the
//! samples realistic?), **recall** the fraction of real images inside the samples' manifold (do
//! the samples cover the data?). Two independent draws of the data give the metric's ceiling.
//!
//! The energy distance of the other image families rewards sets whose per-pixel statistics
//! match; a blurred mean-like image scores well there although it is no glyph. Precision
//! separates such samples from glyph-like ones.
//!
//! ```
//! use mote_converters::zoo::glow::quality::precision_recall;
//! let real = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
//! let fake = [0.1f32, 0.0, 5.0, 5.0];
//! let (p, r) = precision_recall(&real, &fake, 2, 1);
//! assert_eq!(p, 0.5); // (0.1, 0) lies in a real ball, (5, 5) does not
//! // Two far-apart samples have huge balls: recall needs as many samples as real images.
//! assert_eq!(r, 1.0);
//! ```

/// Squared Euclidean distance.
fn d2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Squared distance from every row of `set` (rows of `dim` values) to its `k`-th nearest other
/// row of `set` (`k ≥ 1`; with fewer rows, the farthest one).
pub fn knn_radii(set: &[f32], dim: usize, k: usize) -> Vec<f32> {
    let rows: Vec<&[f32]> = set.chunks_exact(dim).collect();
    rows.iter()
        .enumerate()
        .map(|(i, a)| {
            let mut d: Vec<f32> = rows.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, b)| d2(a, b)).collect();
            d.sort_by(f32::total_cmp);
            d.get(k.max(1) - 1).or(d.last()).copied().unwrap_or(0.0)
        })
        .collect()
}

/// Fraction of the rows of `points` inside the union of the balls around the rows of `centres`
/// with squared radii `radii`.
fn coverage(centres: &[f32], radii: &[f32], points: &[f32], dim: usize) -> f64 {
    let n = points.len() / dim.max(1);
    let inside =
        points.chunks_exact(dim).filter(|p| centres.chunks_exact(dim).zip(radii).any(|(c, &r)| d2(c, p) <= r)).count();
    inside as f64 / n.max(1) as f64
}

/// `(precision, recall)` of the samples `fake` against the images `real` (both rows of `dim`
/// values), with k-NN balls of size `k` (the paper's default is 3).
pub fn precision_recall(real: &[f32], fake: &[f32], dim: usize, k: usize) -> (f64, f64) {
    let precision = coverage(real, &knn_radii(real, dim, k), fake, dim);
    let recall = coverage(fake, &knn_radii(fake, dim, k), real, dim);
    (precision, recall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::rng::SplitMix64;

    #[test]
    fn separates_shifted_and_collapsed_samples_from_the_data() {
        let mut r = SplitMix64::new(2);
        let mut draw = |n: usize, shift: f64, scale: f64| -> Vec<f32> {
            (0..n * 4).map(|_| (shift + scale * r.normal()) as f32).collect()
        };
        let real = draw(300, 0.0, 1.0);
        let (p, rc) = precision_recall(&real, &draw(300, 0.0, 1.0), 4, 3);
        assert!(p > 0.85 && rc > 0.85, "same distribution: {p} {rc}");
        let (p, _) = precision_recall(&real, &draw(300, 4.0, 1.0), 4, 3);
        assert!(p < 0.2, "shifted samples are not realistic: {p}");
        // Collapsed samples (a tiny cloud at the mode) are realistic but cover little.
        let (p, rc) = precision_recall(&real, &draw(300, 0.0, 0.05), 4, 3);
        assert!(p > 0.95 && rc < 0.3, "collapsed: {p} {rc}");
        assert_eq!(knn_radii(&[0.0, 3.0, 7.0], 1, 1), vec![9.0, 9.0, 16.0]);
    }
}
