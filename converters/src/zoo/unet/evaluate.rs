//! Candle-side figures of a trained UNet: sample quality (energy distance to held-out glyphs,
//! in pixels and in the local features of [`crate::zoo::vae::glyphs::local_features`], as the
//! VAE and GAN cards measure it) for DDPM and DDIM at many and at few steps, class accuracy of
//! guided samples under the [`Classifier`], the metric's baselines, and the sample grids.
//!
//! Every sample set starts from the runtime's noise (sample k from seed
//! [`SAMPLE_SEED`]` + k`, see [`super::sampling`]), so the rows differ only in the sampler.
//!
//! ```no_run
//! use mote_converters::zoo::unet::evaluate::candle_figures;
//! use mote_converters::zoo::unet::train::{fit, TrainOptions};
//! let o = TrainOptions::default();
//! let fitted = fit(&o)?;
//! let f = candle_figures(&fitted.model, &o)?;
//! println!("{:?}", f.quality);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::classifier::Classifier;
use super::sampling::{candle_samples, to_pixels, Method};
use super::train::TrainOptions;
use super::UNet;
use crate::zoo::diffusion::sampler::{Condition, Schedule};
use crate::zoo::diffusion::train::SAMPLE_SEED;
use crate::zoo::vae::glyphs::{glyphs, grid_png, independent_pixels, mean_image, uniform_noise, GLYPH_CLASSES};
use crate::zoo::vae::train::{energies, BASELINE_SEED, FLOOR_SEED};
use crate::zoo::vae::PIXELS;

/// Seed of the classifier's initialisation.
pub const CLASSIFIER_SEED: u64 = 0xc1a5;
/// Images per class in each panel of the sample grids.
pub const GRID_COLUMNS: usize = 8;

/// Sample sizes and step counts of the candle evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Unconditional samples per quality row (compare with the held-out set of the same size).
    pub samples: usize,
    /// DDIM step counts measured (unconditional).
    pub ddim_steps: Vec<usize>,
    /// DDPM step counts measured (unconditional).
    pub ddpm_steps: Vec<usize>,
    /// Samples per class in each guidance row.
    pub guided_per_class: usize,
    /// DDIM steps of the guidance rows.
    pub guided_steps: Vec<usize>,
    /// Guidance scales (0: unconditional, 1: conditional).
    pub scales: Vec<f32>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            samples: 512,
            ddim_steps: vec![64, 4, 2, 1],
            ddpm_steps: vec![128],
            guided_per_class: 64,
            guided_steps: vec![32, 4],
            scales: vec![0.0, 1.0, 3.0],
        }
    }
}

/// One sample-quality row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QualityRow {
    /// `DDIM` or `DDPM`.
    pub method: String,
    /// Sampler steps.
    pub steps: usize,
    /// Energy distance to the held-out set in pixels and in local features.
    pub energy: [f64; 2],
    /// Wall time of the sampling run.
    pub seconds: f64,
}

/// One guidance row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuidanceRow {
    /// DDIM steps.
    pub steps: usize,
    /// Guidance scale.
    pub scale: f32,
    /// Fraction of samples the classifier assigns to the class asked for.
    pub accuracy: f64,
    /// Energy distance of the class-balanced samples to the held-out set, pixels / local.
    pub energy: [f64; 2],
}

/// Energy distances `[pixels, local features]` of the reference sets to the held-out set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baselines {
    /// A fresh draw of glyphs (the metric's floor).
    pub floor: [f64; 2],
    /// Pixels resampled independently from the training set.
    pub independent_pixels: [f64; 2],
    /// The mean training image, repeated.
    pub mean_image: [f64; 2],
    /// Uniform noise.
    pub noise: [f64; 2],
}

/// Everything [`candle_figures`] measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CandleFigures {
    /// Unconditional sample quality.
    pub quality: Vec<QualityRow>,
    /// Class accuracy under guidance.
    pub guidance: Vec<GuidanceRow>,
    /// Reference sets.
    pub baselines: Baselines,
    /// Classifier accuracy on the labelled held-out glyphs.
    pub classifier_accuracy_real: f64,
    /// Wall time of the whole evaluation.
    pub seconds: f64,
}

impl CandleFigures {
    /// The quality row of `method` at `steps`.
    pub fn row(&self, method: &str, steps: usize) -> Option<&QualityRow> {
        self.quality.iter().find(|r| r.method == method && r.steps == steps)
    }
}

/// The baselines of the held-out set `test` (pixels) for training set `train`.
pub fn baselines(train: &[f32], test: &[f32]) -> Baselines {
    let n = test.len() / PIXELS;
    let mean = mean_image(train, PIXELS);
    let mean_set: Vec<f32> = (0..n).flat_map(|_| mean.iter().copied()).collect();
    Baselines {
        floor: energies(&glyphs(n, FLOOR_SEED).images, test),
        independent_pixels: energies(&independent_pixels(train, n, BASELINE_SEED), test),
        mean_image: energies(&mean_set, test),
        noise: energies(&uniform_noise(n, BASELINE_SEED), test),
    }
}

/// The classifier of guided samples, fitted on the training glyphs of `o`.
pub fn classifier(o: &TrainOptions) -> Result<Classifier> {
    let train = o.train_set();
    Classifier::fit(&train.images, &train.labels, o.config.classes, CLASSIFIER_SEED)
}

/// `per_class` samples of every class under `cond(class)` (class c from seeds
/// `SAMPLE_SEED + 1000·(c + 1) + k`), as pixels, class after class.
pub fn per_class_samples(
    m: &UNet,
    s: &Schedule,
    steps: usize,
    per_class: usize,
    cond: impl Fn(usize) -> Condition,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for c in 0..m.config().classes {
        let seed = SAMPLE_SEED + 1000 * (c as u64 + 1);
        out.extend(to_pixels(&candle_samples(m, s, Method::Ddim, steps, cond(c), per_class, seed)?));
    }
    Ok(out)
}

/// Measures `m` with candle as [`TrainOptions::eval`] asks (see the module docs).
pub fn candle_figures(m: &UNet, o: &TrainOptions) -> Result<CandleFigures> {
    let start = Instant::now();
    let e = &o.eval;
    let s = Schedule::cosine(m.config().timesteps);
    let test = o.test_set();
    let test_n = &test.images[..e.samples.min(test.len()) * PIXELS];
    let mut quality = Vec::new();
    let runs = e.ddpm_steps.iter().map(|&n| (Method::Ddpm, n)).chain(e.ddim_steps.iter().map(|&n| (Method::Ddim, n)));
    for (method, steps) in runs {
        let t0 = Instant::now();
        let smp = candle_samples(m, &s, method, steps, Condition::Unconditional, e.samples, SAMPLE_SEED)?;
        let row = QualityRow {
            method: if method == Method::Ddpm { "DDPM" } else { "DDIM" }.into(),
            steps,
            energy: energies(&to_pixels(&smp), test_n),
            seconds: t0.elapsed().as_secs_f64(),
        };
        eprintln!("candle {} {steps}: energy local {:.4} ({:.0} s)", row.method, row.energy[1], row.seconds);
        quality.push(row);
    }
    let judge = classifier(o)?;
    let truth: Vec<usize> = test.labels.iter().map(|&l| l as usize).collect();
    let classifier_accuracy_real = judge.accuracy(&test.images, &truth)?;
    eprintln!("classifier accuracy on held-out glyphs {classifier_accuracy_real:.3}");
    let mut guidance = Vec::new();
    for &steps in &e.guided_steps {
        for &scale in &e.scales {
            let smp = per_class_samples(m, &s, steps, e.guided_per_class, |class| Condition::Guided { class, scale })?;
            let want: Vec<usize> = (0..m.config().classes).flat_map(|c| vec![c; e.guided_per_class]).collect();
            let row =
                GuidanceRow { steps, scale, accuracy: judge.accuracy(&smp, &want)?, energy: energies(&smp, test_n) };
            eprintln!("candle guided DDIM {steps}, scale {scale}: class accuracy {:.3}", row.accuracy);
            guidance.push(row);
        }
    }
    let train = o.train_set();
    Ok(CandleFigures {
        quality,
        guidance,
        baselines: baselines(&train.images, test_n),
        classifier_accuracy_real,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `per_class` held-out glyphs of every class, class after class (the grids' data panel).
pub fn data_by_class(o: &TrainOptions, per_class: usize) -> Vec<f32> {
    let test = o.test_set();
    let mut out = Vec::new();
    for c in 0..GLYPH_CLASSES.len().min(o.config.classes) {
        let picks = (0..test.len()).filter(|&i| test.labels[i] as usize == c).take(per_class);
        for i in picks {
            out.extend_from_slice(test.image(i));
        }
    }
    out
}

/// Writes `samples.png`: one row per class, [`GRID_COLUMNS`] images each, panels left to right:
/// held-out glyphs, then one panel per `(steps, scale)` of `panels` (DDIM, guided with `scale`;
/// scale 1 is the plain conditional model). Returns the panel labels.
pub fn write_grids(path: &Path, m: &UNet, o: &TrainOptions, panels: &[(usize, f32)]) -> Result<Vec<String>> {
    let s = Schedule::cosine(m.config().timesteps);
    let mut sets = vec![data_by_class(o, GRID_COLUMNS)];
    let mut labels = vec!["held-out glyphs".to_string()];
    for &(steps, scale) in panels {
        sets.push(per_class_samples(m, &s, steps, GRID_COLUMNS, |class| Condition::Guided { class, scale })?);
        labels.push(format!("DDIM {steps} steps, guidance {scale}"));
    }
    let refs: Vec<&[f32]> = sets.iter().map(|v| v.as_slice()).collect();
    grid_png(path, &refs, GRID_COLUMNS, 2)?;
    Ok(labels)
}
