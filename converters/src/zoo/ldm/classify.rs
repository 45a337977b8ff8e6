//! The class-accuracy judge of guided samples: a k-nearest-neighbour classifier in pixel space
//! (Euclidean distance over the 256 pixels, majority vote of the k nearest, ties to the lower
//! class) fitted on real glyphs. It knows nothing of the VAE, so a decoded sample is judged
//! only by what it looks like.
//!
//! ```
//! use mote_converters::zoo::ldm::classify::GlyphKnn;
//! use mote_converters::zoo::vae::glyphs::glyphs;
//! let knn = GlyphKnn::fit(&glyphs(2000, 1), 5);
//! let test = glyphs(100, 2);
//! assert!(knn.accuracy(&test.images, |i| test.labels[i] as usize) > 0.6);
//! ```

use crate::zoo::vae::glyphs::{Glyphs, GLYPH_CLASSES, PIXELS};

/// Seed of the glyphs the classifier is fitted on (a draw of its own).
pub const CLASSIFIER_SEED: u64 = 0xc1a55;
/// Glyphs the zoo's classifier is fitted on.
pub const CLASSIFIER_GLYPHS: usize = 8192;
/// Neighbours that vote.
pub const CLASSIFIER_K: usize = 5;

/// k-NN over 16×16 images; see the module docs.
#[derive(Clone, Debug)]
pub struct GlyphKnn {
    images: Vec<f32>,
    labels: Vec<u8>,
    k: usize,
}

impl GlyphKnn {
    /// Fits on labelled glyphs with `k` voting neighbours.
    pub fn fit(g: &Glyphs, k: usize) -> Self {
        Self { images: g.images.clone(), labels: g.labels.clone(), k: k.max(1) }
    }

    /// The zoo's classifier: [`CLASSIFIER_GLYPHS`] glyphs of seed [`CLASSIFIER_SEED`], k =
    /// [`CLASSIFIER_K`].
    pub fn zoo() -> Self {
        Self::fit(&crate::zoo::vae::glyphs::glyphs(CLASSIFIER_GLYPHS, CLASSIFIER_SEED), CLASSIFIER_K)
    }

    /// The predicted class of one image (256 pixels; shorter input compares its own pixels).
    pub fn classify(&self, image: &[f32]) -> usize {
        let mut best: Vec<(f32, u8)> = Vec::with_capacity(self.k + 1);
        for (q, &l) in self.images.chunks_exact(PIXELS).zip(&self.labels) {
            let d: f32 = image.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
            if best.len() < self.k || d < best[best.len() - 1].0 {
                let at = best.partition_point(|&(e, _)| e <= d);
                best.insert(at, (d, l));
                best.truncate(self.k);
            }
        }
        let mut votes = [0usize; GLYPH_CLASSES.len()];
        for (_, l) in best {
            if let Some(v) = votes.get_mut(l as usize) {
                *v += 1;
            }
        }
        (0..votes.len()).max_by_key(|&c| (votes[c], std::cmp::Reverse(c))).unwrap_or(0)
    }

    /// Fraction of `images` (256 pixels each) classified as `want(i)`, the class image `i` was
    /// asked for.
    pub fn accuracy(&self, images: &[f32], want: impl Fn(usize) -> usize) -> f64 {
        let n = images.len() / PIXELS;
        let hits = images.chunks_exact(PIXELS).enumerate().filter(|&(i, im)| self.classify(im) == want(i)).count();
        hits as f64 / n.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::vae::glyphs::glyphs;

    #[test]
    fn knn_recognises_glyphs_and_flags_wrong_classes() {
        let knn = GlyphKnn::fit(&glyphs(3000, 11), CLASSIFIER_K);
        let test = glyphs(300, 12);
        let right = knn.accuracy(&test.images, |i| test.labels[i] as usize);
        let wrong = knn.accuracy(&test.images, |i| (test.labels[i] as usize + 1) % GLYPH_CLASSES.len());
        assert!(right > 0.7 && wrong < 0.15, "right {right}, wrong {wrong}");
        // A training image is its own nearest neighbour.
        let first = glyphs(3000, 11);
        let mut k1 = knn.clone();
        k1.k = 1;
        assert_eq!(k1.classify(first.image(7)), first.labels[7] as usize);
    }
}
