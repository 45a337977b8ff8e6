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

use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::verify;
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
    /// Real-valued weights stored in the f32 file (shared weights once; `W` and `W⁻¹` both).
    pub params: usize,
    /// Entry points of the f32 file.
    pub entries: Vec<String>,
    /// f32 file bytes (both entries).
    pub flash_f32: usize,
    /// Sum of the f32 file bytes of `forward.onnx` and `inverse.onnx` converted separately.
    pub flash_f32_separate: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// f32 arena bytes (peak over entries).
    pub arena_f32: usize,
    /// Largest per-entry lower bound of the f32 plan.
    pub lower_bound_f32: usize,
    /// The f32 arena the same plans would need with no op in place (peak over entries).
    pub arena_f32_without_in_place: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// The int8 arena with no op in place (peak over entries).
    pub arena_int8_without_in_place: usize,
    /// State bytes (0: flows keep no state).
    pub state_int8: usize,
    /// Batch bound `n` the files were converted for.
    pub batch: usize,
    /// MACs of one `forward` call on a full batch.
    pub macs_forward: u64,
    /// MACs of one `inverse` call on a full batch.
    pub macs_inverse: u64,
    /// f32 `.mote` against tract on the golden inputs (both entries, all outputs), max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 runtime `log_prob` against candle's golden values, max-abs (nats per image).
    pub log_prob_vs_candle_max_abs: f32,
    /// f32 runtime `z` and `inverse` samples against candle's golden values, max-abs.
    pub latent_vs_candle_max_abs: f32,
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
    /// Whether the committed `model.mote` equals a fresh f32 conversion byte for byte.
    pub committed_f32_up_to_date: bool,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
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
        let metric = TaskMetric { name: "NLL nats/dim".into(), f32: self.nll_f32, int8: self.nll_int8 };
        family_row!(self, self.macs_forward / self.batch.max(1) as u64, metric)
    }
}

/// Options converting `forward.onnx` of the Glow folder with `inverse.onnx` as the entry
/// `inverse`: `n` bounded by the exported batch, calibration of `forward` from `calib/`
/// (dequantised training images) and of `inverse` from N(0, 1) latents.
pub fn glow_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    super::coupling::flow_options(dir, quant)
}

/// Runs `entry` over the rows of `data` in batches shaped `shape` (its first dim the batch `n`,
/// the last batch padded with zeros), returning every output with the padding rows dropped,
/// each flattened.
pub fn run_rows(bytes: &[u8], entry: &str, data: &[f32], shape: &[usize]) -> Result<Vec<Vec<f32>>> {
    let n = shape.first().copied().ok_or_else(|| anyhow!("empty input shape"))?;
    let row: usize = shape[1..].iter().product();
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for chunk in data.chunks(n * row.max(1)) {
        let mut batch = chunk.to_vec();
        batch.resize(n * row, 0.0);
        let got = host::run(bytes, entry, &[Array::f32(shape.to_vec(), batch)])?;
        outs.resize(got.len(), Vec::new());
        for (o, a) in outs.iter_mut().zip(got) {
            let v = a.to_f32();
            let per_row = v.len() / n.max(1);
            o.extend_from_slice(&v[..chunk.len() / row.max(1) * per_row]);
        }
    }
    Ok(outs)
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

/// `(arena, lower bound, arena without in-place)`, each the peak over entries.
fn peak(c: &Converted) -> (usize, usize, usize) {
    let (arena, lower) = c.arena_and_lower_bound();
    (arena, lower, c.plans.iter().map(|p| p.arena_without_in_place).max().unwrap_or(0))
}

/// Measures the Glow family in `dir` (`models/glow`).
pub fn evaluate_glow(dir: &Path) -> Result<GlowFigures> {
    let report = GlowReport::read(dir)?;
    let o = &report.options;
    let (side, d) = (o.config.side, o.config.dims());
    let n = super::max_batch_of(&dir.join("forward.onnx"))?;
    let (fwd_onnx, inv_onnx) = (dir.join("forward.onnx"), dir.join("inverse.onnx"));
    let f32m = convert::convert(&fwd_onnx, &glow_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&fwd_onnx, &glow_options(dir, QuantMode::Int8)?)?;
    let single = |p: &Path| -> Result<usize> {
        let o = Options { extra_entries: Vec::new(), ..glow_options(dir, QuantMode::F32)? };
        Ok(convert::convert(p, &o)?.bytes.len())
    };
    let flash_f32_separate = single(&fwd_onnx)? + single(&inv_onnx)?;
    let entries = f32m.inspection.entries.iter().map(|e| e.entry.clone()).collect();

    // Golden parity: forward on golden/x.npy, inverse on golden/latent.npy.
    let gx = Array::read_npy(&dir.join("golden/x.npy"))?;
    let glat = Array::read_npy(&dir.join("golden/latent.npy"))?;
    let fwd = host::run(&f32m.bytes, "forward", std::slice::from_ref(&gx))?;
    let inv = host::run(&f32m.bytes, "inverse", std::slice::from_ref(&glat))?;
    let tf = verify::tract_reference(&fwd_onnx, std::slice::from_ref(&gx))?;
    let ti = verify::tract_reference(&inv_onnx, std::slice::from_ref(&glat))?;
    if fwd.len() != 2 || tf.len() != 2 || inv.is_empty() || ti.is_empty() {
        bail!("{}: forward must give (z, log_prob) and inverse x", dir.display());
    }
    let mut vs_tract = max_abs(&fwd[0].to_f32(), &tf[0].to_f32()).max(max_abs(&fwd[1].to_f32(), &tf[1].to_f32()));
    vs_tract = vs_tract.max(max_abs(&inv[0].to_f32(), &ti[0].to_f32()));
    let golden = |name: &str| -> Result<Vec<f32>> { Ok(Array::read_npy(&dir.join("golden").join(name))?.to_f32()) };
    let log_prob_vs_candle = max_abs(&fwd[1].to_f32(), &golden("log_prob.npy")?);
    let latent_vs_candle =
        max_abs(&fwd[0].to_f32(), &golden("z.npy")?).max(max_abs(&inv[0].to_f32(), &golden("sample.npy")?));

    let test = o.test_set();
    let latents = gaussians(o.test_images, d, LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &latents, n, side)?;
    let r8 = run_file(&i8m.bytes, &test, &latents, n, side)?;
    let test_pixels = to_pixels(&test);
    let pairs32 = invconv_pairs(&f32m.bytes)?;

    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    let (arena_f32, lower_bound_f32, arena_f32_without_in_place) = peak(&f32m);
    let (arena_int8, lower_bound_int8, arena_int8_without_in_place) = peak(&i8m);
    Ok(GlowFigures {
        params: stored_params(&f32m.bytes)?,
        entries,
        flash_f32: f32m.bytes.len(),
        flash_f32_separate,
        flash_int8: i8m.bytes.len(),
        arena_f32,
        lower_bound_f32,
        arena_f32_without_in_place,
        arena_int8,
        lower_bound_int8,
        arena_int8_without_in_place,
        state_int8: i8m.inspection.state_bytes,
        batch: n,
        macs_forward: i8m.entry_macs("forward"),
        macs_inverse: i8m.entry_macs("inverse"),
        f32_vs_tract_max_abs: vs_tract,
        log_prob_vs_candle_max_abs: log_prob_vs_candle,
        latent_vs_candle_max_abs: latent_vs_candle,
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
        committed_f32_up_to_date: read("model.mote") == f32m.bytes,
        committed_int8_up_to_date: read("model.int8.mote") == i8m.bytes,
        report: report.clone(),
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        test_pixels,
    })
}
