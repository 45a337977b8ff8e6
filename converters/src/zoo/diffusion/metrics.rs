//! Data and sample-quality measures of `ddpm2d`: labelled two moons (class = moon), the
//! energy distance to held-out data ([`crate::zoo::toy2d::energy_distance`]) and the class
//! accuracy of conditional samples under a k-nearest-neighbour classifier fitted on labelled
//! real data.
//!
//! ```
//! use mote_converters::zoo::diffusion::metrics::{labelled_moons, Knn};
//! let (train, labels) = labelled_moons(2000, 0.1, 1);
//! let knn = Knn::fit(&train, &labels, 2, 15);
//! let (test, truth) = labelled_moons(400, 0.1, 2);
//! assert!(knn.accuracy(&test, |i| truth[i]) > 0.97);
//! ```

use crate::zoo::toy2d::{two_moons, Point};

/// `n` standardised two-moons points ([`two_moons`], noise `noise`) and their classes: 0 for the
/// upper moon (even indices), 1 for the lower one.
pub fn labelled_moons(n: usize, noise: f32, seed: u64) -> (Vec<Point>, Vec<usize>) {
    (two_moons(n, noise, seed), (0..n).map(|i| i % 2).collect())
}

/// A k-nearest-neighbour classifier (majority vote, ties to the lower class).
#[derive(Debug, Clone)]
pub struct Knn {
    points: Vec<Point>,
    labels: Vec<usize>,
    classes: usize,
    k: usize,
}

impl Knn {
    /// Fits on labelled points (labels in `0..classes`).
    pub fn fit(points: &[Point], labels: &[usize], classes: usize, k: usize) -> Self {
        Self { points: points.to_vec(), labels: labels.to_vec(), classes: classes.max(1), k: k.max(1) }
    }

    /// The predicted class of `p`.
    pub fn classify(&self, p: Point) -> usize {
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(self.k + 1);
        for (q, &l) in self.points.iter().zip(&self.labels) {
            let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2);
            if best.len() < self.k || d < best[best.len() - 1].0 {
                let at = best.partition_point(|&(e, _)| e <= d);
                best.insert(at, (d, l));
                best.truncate(self.k);
            }
        }
        let mut votes = vec![0usize; self.classes];
        for (_, l) in best {
            if let Some(v) = votes.get_mut(l) {
                *v += 1;
            }
        }
        (0..self.classes).max_by_key(|&c| (votes[c], std::cmp::Reverse(c))).unwrap_or(0)
    }

    /// Fraction of `points` classified as `want(i)` (the class point `i` was asked for).
    pub fn accuracy(&self, points: &[Point], want: impl Fn(usize) -> usize) -> f64 {
        let hits = points.iter().enumerate().filter(|&(i, &p)| self.classify(p) == want(i)).count();
        hits as f64 / points.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_separates_the_moons_and_flags_wrong_classes() {
        let (train, labels) = labelled_moons(2000, 0.1, 1);
        let knn = Knn::fit(&train, &labels, 2, 15);
        let (test, truth) = labelled_moons(1000, 0.1, 2);
        assert!(knn.accuracy(&test, |i| truth[i]) > 0.98);
        assert!(knn.accuracy(&test, |i| 1 - truth[i]) < 0.02);
        assert_eq!(knn.classify([0.0, 2.5]), 0, "far above: the upper moon");
    }
}
