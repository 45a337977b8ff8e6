//! Figures of the Glow family measured through the converter and the runtime: both directions
//! as two entries of one `.mote` (1×1 convolutions stored as `W` and `W⁻¹`, everything else
//! once), exact log-likelihood on held-out glyphs (f32 and int8) against a fitted Gaussian,
//! sample quality (energy distance of runtime samples to held-out glyphs), invertibility, the
//! stored `W·W⁻¹`, and parity with tract and candle.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_glow(std::path::Path::new("models/glow"))?;
//! assert!(f.nll_f32 < f.baseline_nll);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::two_way::{flow_options, run_rows, TwoWayConversion, TwoWayFile};
use super::{max_abs, FamilyFigures};
use crate::convert::{Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::zoo::glow::data::to_pixels;
use crate::zoo::glow::train::{energies, nll_per_dim, pr, GlowReport, LATENT_SEED};
use crate::zoo::vae::train::gaussians;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything measured about the Glow folder (`models/glow`).
#[derive(Debug, Clone, Serialize)]
pub struct GlowFigures {
    /// The two-entry file: size, memory, MACs, golden parity, freshness (shared weights are
    /// stored once; the 1×1 convolutions as `W` and `W⁻¹`, both counted in `params`).
    #[serde(flatten)]
    pub file: TwoWayFile,
    /// The f32 arena the same plans would need with no op in place (peak over entries).
    pub arena_f32_without_in_place: usize,
    /// The int8 arena with no op in place (peak over entries).
    pub arena_int8_without_in_place: usize,
    /// max |inverse(forward(x)) − x| over the test set on the runtime, f32 file.
    pub invertibility_f32: f32,
    /// The same with the int8 file.
    pub invertibility_int8: f32,
    /// Mean |inverse(forward(x)) − x| per pixel with the int8 file.
    pub invertibility_int8_mean: f64,
    /// 1×1 convolutions found in the f32 file as `W` / `W⁻¹` pairs.
    pub invconv_pairs: usize,
    /// max |W·W⁻¹ − I| over those pairs, as stored in the f32 file (f32 weights).
    pub invconv_identity_f32: f64,
    /// The same in the int8 file (f16 weights).
    pub invconv_identity_int8: f64,
    /// Test images scored.
    pub test_images: usize,
    /// Test NLL (nats/dim) in candle, from the training report.
    pub nll_candle: f64,
    /// Test NLL (nats/dim) of the f32 file on the runtime.
    pub nll_f32: f64,
    /// Test NLL (nats/dim) of the int8 file on the runtime.
    pub nll_int8: f64,
    /// Test NLL (nats/dim) of the full-covariance Gaussian fitted on the training set.
    pub baseline_nll: f64,
    /// Energy distances `[pixels, local features]` of the f32 file's samples to the test set.
    pub energy_f32: [f64; 2],
    /// The same, int8 file.
    pub energy_int8: [f64; 2],
    /// `[precision, recall]` of the f32 file's samples against the test set (k-NN balls).
    pub pr_f32: [f64; 2],
    /// The same, int8 file.
    pub pr_int8: [f64; 2],
    /// The training report (candle figures and baselines).
    pub report: GlowReport,
    /// Runtime samples of the f32 file, as pixels (for plots; not serialised).
    #[serde(skip)]
    pub samples_f32: Vec<f32>,
    /// Runtime samples of the int8 file, as pixels.
    #[serde(skip)]
    pub samples_int8: Vec<f32>,
    /// The test set, as pixels.
    #[serde(skip)]
    pub test_pixels: Vec<f32>,
}

impl GlowFigures {
    /// The report row: task metric = test NLL in nats/dim (lower is better); MACs per image.
    pub fn summary(&self) -> FamilyFigures {
        self.file.summary(self.nll_f32, self.nll_int8)
    }
}

/// Options converting `forward.onnx` of the Glow folder with `inverse.onnx` as the entry
/// `inverse`: `n` bounded by the exported batch, calibration of `forward` from `calib/`
/// (dequantised training images) and of `inverse` from N(0, 1) latents.
pub fn glow_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    flow_options(dir, quant)
}

/// A 1×1 convolution stored in a `.mote` file next to its inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct InvConvPair {
    /// Layer name, e.g. `l0.s1.invconv`.
    pub layer: String,
    /// `W` (`C × C`, row-major).
    pub w: Vec<f32>,
    /// `W⁻¹` (`C × C`, row-major).
    pub w_inv: Vec<f32>,
}

/// The `W` / `W⁻¹` pairs of the 1×1 convolutions stored in a `.mote` file, found by name
/// (`<layer>.weight` next to `<layer>.weight_inv`, whatever entry prefix `<entry>/` the
/// converter gave them).
pub fn invconv_pairs(bytes: &[u8]) -> Result<Vec<InvConvPair>> {
    let m = mote::Model::parse(bytes)?;
    let mut by_name = BTreeMap::new();
    for i in 0..m.tensor_count() as u32 {
        let id = mote::TensorId(i);
        let Some(name) = m.tensor_name(id) else { continue };
        let base = name.rsplit('/').next().unwrap_or(name);
        if base.ends_with(".invconv.weight") || base.ends_with(".invconv.weight_inv") {
            let v = m.weight_view(&m.tensor(id)?)?;
            by_name.insert(base.to_string(), (0..v.desc.shape.numel()).map(|k| v.get(k)).collect::<Vec<f32>>());
        }
    }
    let mut out = Vec::new();
    for (name, w_inv) in &by_name {
        let Some(layer) = name.strip_suffix(".weight_inv") else { continue };
        let w = by_name.get(&format!("{layer}.weight")).ok_or_else(|| anyhow!("{layer}: W⁻¹ stored without W"))?;
        out.push(InvConvPair { layer: layer.to_string(), w: w.clone(), w_inv: w_inv.clone() });
    }
    Ok(out)
}

/// max |W·W⁻¹ − I| (in f64) over the pairs of [`invconv_pairs`]; errors on non-square pairs.
pub fn identity_error(pairs: &[InvConvPair]) -> Result<f64> {
    let mut worst = 0f64;
    for InvConvPair { layer, w, w_inv } in pairs {
        let c = (w.len() as f64).sqrt().round() as usize;
        if c * c != w.len() || w_inv.len() != w.len() {
            bail!("{layer}: W has {} values, W⁻¹ {}", w.len(), w_inv.len());
        }
        for i in 0..c {
            for j in 0..c {
                let v: f64 = (0..c).map(|k| w[i * c + k] as f64 * w_inv[k * c + j] as f64).sum();
                worst = worst.max((v - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
    }
    Ok(worst)
}

/// The runtime measurements of one file.
struct Run {
    nll: f64,
    invertibility: f32,
    invertibility_mean: f64,
    samples: Vec<f32>,
}

fn run_file(bytes: &[u8], test: &[f32], latents: &[f32], n: usize, side: usize) -> Result<Run> {
    let d = side * side;
    let fwd = run_rows(bytes, "forward", test, &[n, 1, side, side])?;
    let [z, lp] = &fwd[..] else { bail!("forward must have two outputs (z, log_prob), has {}", fwd.len()) };
    let back = run_rows(bytes, "inverse", z, &[n, d])?.remove(0);
    let samples = run_rows(bytes, "inverse", latents, &[n, d])?.remove(0);
    let total: f64 = back.iter().zip(test).map(|(a, b)| (a - b).abs() as f64).sum();
    Ok(Run {
        nll: nll_per_dim(lp, d),
        invertibility: max_abs(&back, test),
        invertibility_mean: total / test.len().max(1) as f64,
        samples: to_pixels(&samples),
    })
}

/// The arena `c` would need with no op in place (peak over entries).
fn arena_without_in_place(c: &Converted) -> usize {
    c.plans.iter().map(|p| p.arena_without_in_place).max().unwrap_or(0)
}

/// Measures the Glow family in `dir` (`models/glow`).
pub fn evaluate_glow(dir: &Path) -> Result<GlowFigures> {
    let report = GlowReport::read(dir)?;
    let o = &report.options;
    let (side, d) = (o.config.side, o.config.dims());
    let TwoWayConversion { file, f32: f32m, int8: i8m } = TwoWayFile::measure(dir)?;
    let test = o.test_set();
    let latents = gaussians(o.test_images, d, LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &latents, file.batch, side)?;
    let r8 = run_file(&i8m.bytes, &test, &latents, file.batch, side)?;
    let test_pixels = to_pixels(&test);
    let pairs32 = invconv_pairs(&f32m.bytes)?;
    Ok(GlowFigures {
        file,
        arena_f32_without_in_place: arena_without_in_place(&f32m),
        arena_int8_without_in_place: arena_without_in_place(&i8m),
        invertibility_f32: r32.invertibility,
        invertibility_int8: r8.invertibility,
        invertibility_int8_mean: r8.invertibility_mean,
        invconv_pairs: pairs32.len(),
        invconv_identity_f32: identity_error(&pairs32)?,
        invconv_identity_int8: identity_error(&invconv_pairs(&i8m.bytes)?)?,
        test_images: o.test_images,
        nll_candle: report.test_nll,
        nll_f32: r32.nll,
        nll_int8: r8.nll,
        baseline_nll: report.baseline_nll,
        energy_f32: energies(&r32.samples, &test_pixels),
        energy_int8: energies(&r8.samples, &test_pixels),
        pr_f32: pr(&test_pixels, &r32.samples),
        pr_int8: pr(&test_pixels, &r8.samples),
        report: report.clone(),
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        test_pixels,
    })
}
