//! The class-accuracy judge of guided samples: multinomial logistic regression on
//! translation-invariant features of a glyph, fitted on labelled real glyphs.
//!
//! Glyphs sit at random positions, so pixels (or a nearest-centroid rule on them) say little
//! about the class. The features are the image's normalised autocorrelation
//! `A(d) / A(0)` with `A(d) = Σ_p x(p)·x(p + d)` over the offsets `d` of a half-window of
//! radius [`RADIUS`] (the autocorrelation is symmetric), plus `A(0)` and the total ink; they do
//! not change when the glyph moves. Features are standardised with the training set's mean and
//! deviation, and the weights are fitted by full-batch Adam on the cross-entropy.
//!
//! ```no_run
//! use mote_converters::zoo::unet::classifier::Classifier;
//! use mote_converters::zoo::vae::glyphs::glyphs;
//! let (train, test) = (glyphs(4096, 1), glyphs(512, 2));
//! let c = Classifier::fit(&train.images, &train.labels, 6, 0)?;
//! let truth: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
//! println!("{:.3}", c.accuracy(&test.images, &truth)?);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

use crate::zoo::vae::{PIXELS, SIDE};

/// Largest offset of the autocorrelation features, in pixels.
pub const RADIUS: isize = 7;
/// Optimiser steps of the fit.
const FIT_STEPS: usize = 400;

/// The offsets `(dy, dx)` of the half-window: `dy > 0`, or `dy = 0` and `dx ≥ 0`.
fn offsets() -> Vec<(isize, isize)> {
    let mut o = Vec::new();
    for dy in 0..=RADIUS {
        for dx in -RADIUS..=RADIUS {
            if dy > 0 || dx >= 0 {
                o.push((dy, dx));
            }
        }
    }
    o
}

/// Width of [`features`].
pub fn feature_count() -> usize {
    offsets().len() + 1
}

/// The translation-invariant features of row-major 16×16 images (see the module docs).
pub fn features(images: &[f32]) -> Vec<f32> {
    let offs = offsets();
    let mut out = Vec::with_capacity(images.len() / PIXELS * (offs.len() + 1));
    let s = SIDE as isize;
    for im in images.chunks_exact(PIXELS) {
        let at = |y: isize, x: isize| {
            if (0..s).contains(&y) && (0..s).contains(&x) {
                im[(y * s + x) as usize]
            } else {
                0.0
            }
        };
        let auto = |(dy, dx): (isize, isize)| -> f32 {
            let mut a = 0f32;
            for y in 0..s {
                for x in 0..s {
                    a += at(y, x) * at(y + dy, x + dx);
                }
            }
            a
        };
        let a0 = auto((0, 0)).max(1e-6);
        out.push(a0.ln());
        out.extend(offs.iter().skip(1).map(|&d| auto(d) / a0));
        out.push(im.iter().sum::<f32>().max(1e-6).ln());
    }
    out
}

/// A fitted multinomial logistic regression on [`features`].
#[derive(Debug, Clone)]
pub struct Classifier {
    mean: Tensor,
    std: Tensor,
    weight: Tensor,
    bias: Tensor,
}

impl Classifier {
    /// Fits on `images` (row-major 16×16, back to back) with labels in `0..classes`.
    pub fn fit(images: &[f32], labels: &[u8], classes: usize, seed: u64) -> Result<Self> {
        let n = labels.len();
        ensure!(
            n > 0 && images.len() == n * PIXELS && classes > 1,
            "classifier: {n} labels for {} pixels",
            images.len()
        );
        let dev = Device::Cpu;
        let f = feature_count();
        let x = Tensor::from_vec(features(images), (n, f), &dev)?;
        let mean = x.mean_keepdim(0)?;
        let std = (x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let mut rng = crate::zoo::rng::SplitMix64::new(seed);
        let w0 = Tensor::from_vec(rng.normal_vec(f * classes, 0.01), (f, classes), &dev)?;
        let weight = candle_core::Var::from_tensor(&w0)?;
        let bias = candle_core::Var::zeros(classes, DType::F32, &dev)?;
        let y = Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), n, &dev)?;
        let params = ParamsAdamW { lr: 0.05, weight_decay: 1e-4, ..ParamsAdamW::default() };
        let mut opt = AdamW::new(vec![weight.clone(), bias.clone()], params)?;
        for _ in 0..FIT_STEPS {
            let logits = x.matmul(weight.as_tensor())?.broadcast_add(bias.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
        }
        Ok(Self { mean, std, weight: weight.as_tensor().clone(), bias: bias.as_tensor().clone() })
    }

    /// The predicted class of each image.
    pub fn classify(&self, images: &[f32]) -> Result<Vec<usize>> {
        let n = images.len() / PIXELS;
        if n == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::from_vec(features(&images[..n * PIXELS]), (n, feature_count()), &Device::Cpu)?;
        let x = x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        let logits = x.matmul(&self.weight)?.broadcast_add(&self.bias)?;
        Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|c| c as usize).collect())
    }

    /// Fraction of `images` classified as `want[i]`.
    pub fn accuracy(&self, images: &[f32], want: &[usize]) -> Result<f64> {
        let got = self.classify(images)?;
        let hits = got.iter().zip(want).filter(|(a, b)| a == b).count();
        Ok(hits as f64 / got.len().max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::vae::glyphs::glyphs;

    #[test]
    fn features_ignore_translation() {
        let mut a = vec![0f32; PIXELS];
        let mut b = vec![0f32; PIXELS];
        for (y, x) in [(3, 3), (3, 4), (4, 5), (6, 3)] {
            a[y * SIDE + x] = 1.0;
            b[(y + 5) * SIDE + x + 6] = 1.0;
        }
        assert_eq!(features(&a), features(&b));
        assert_eq!(features(&a).len(), feature_count());
    }

    #[test]
    fn classifies_held_out_glyphs() -> Result<()> {
        let (train, test) = (glyphs(2048, 11), glyphs(300, 12));
        let c = Classifier::fit(&train.images, &train.labels, 6, 0)?;
        let truth: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
        let acc = c.accuracy(&test.images, &truth)?;
        assert!(acc > 0.8, "accuracy {acc}");
        Ok(())
    }
}
