//! Figures of the VAE family measured through the converter and the runtime: decoder
//! (`forward`) and encoder (`encode`) as two entries of one `.mote`, the test ELBO and the
//! reconstruction error in f32 and int8 against candle and the baselines, sample quality
//! (energy distance of runtime-decoded N(0, I) latents to held-out glyphs) and parity with
//! tract and candle.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_vae(std::path::Path::new("models/vae"))?;
//! assert!(f.f32.neg_elbo < f.report.baseline_nll);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::Bounds;
use crate::verify;
use crate::zoo::vae::train::{score, Scored, VaeReport, VaeRunner, VaeScores};
use crate::zoo::vae::{PIXELS, SIDE};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about the VAE folder (`models/vae`).
#[derive(Debug, Clone, Serialize)]
pub struct VaeFigures {
    /// Real-valued weights stored in the f32 file (both entries).
    pub params: usize,
    /// Entry points of the f32 file.
    pub entries: Vec<String>,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// f32 arena bytes (peak over entries).
    pub arena_f32: usize,
    /// Largest per-entry lower bound of the f32 plan.
    pub lower_bound_f32: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// Batch bound `n` the files were converted for.
    pub batch: usize,
    /// MACs of one `forward` (decode) call on a full batch.
    pub macs_decode: u64,
    /// MACs of one `encode` call on a full batch.
    pub macs_encode: u64,
    /// f32 `.mote` against tract on the golden batch (both entries, all outputs), max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 runtime `μ`, `log σ²` against candle's golden values, max-abs.
    pub encode_vs_candle_max_abs: f32,
    /// f32 runtime reconstructions `decode(μ)` and samples against candle's golden images, max-abs.
    pub decode_vs_candle_max_abs: f32,
    /// int8 against f32 runtime images (golden reconstructions and samples), max-abs.
    pub int8_vs_f32_max_abs: f32,
    /// Test images scored.
    pub test_images: usize,
    /// Scores of the f32 file on the runtime.
    pub f32: VaeScores,
    /// Scores of the int8 file on the runtime.
    pub int8: VaeScores,
    /// The training report (candle scores and baselines).
    pub report: VaeReport,
    /// Whether the committed `model.mote` equals a fresh f32 conversion byte for byte.
    pub committed_f32_up_to_date: bool,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
    /// Runtime samples of the f32 file (decoded N(0, I) latents; for plots).
    #[serde(skip)]
    pub samples_f32: Vec<f32>,
    /// Runtime samples of the int8 file.
    #[serde(skip)]
    pub samples_int8: Vec<f32>,
    /// Runtime reconstructions `decode(μ(x))` of the test images, f32 file.
    #[serde(skip)]
    pub recon_f32: Vec<f32>,
    /// The same, int8 file.
    #[serde(skip)]
    pub recon_int8: Vec<f32>,
    /// The test images.
    #[serde(skip)]
    pub test: Vec<f32>,
}

impl VaeFigures {
    /// The report row: task metric = test −ELBO in nats/image (lower is better); MACs per
    /// decoded image.
    pub fn summary(&self) -> FamilyFigures {
        FamilyFigures {
            params: self.params,
            flash_f32: self.flash_f32,
            flash_int8: self.flash_int8,
            arena_int8: self.arena_int8,
            lower_bound_int8: self.lower_bound_int8,
            state_int8: 0,
            macs_per_token: self.macs_decode / self.batch.max(1) as u64,
            f32_vs_tract_max_abs: self.f32_vs_tract_max_abs,
            metric: TaskMetric { name: "-ELBO nats/img".into(), f32: self.f32.neg_elbo, int8: self.int8.neg_elbo },
            committed_int8_up_to_date: self.committed_int8_up_to_date,
        }
    }
}

/// Options converting `decoder.onnx` (entry `forward`) with `encoder.onnx` as the entry
/// `encode`: `n` bounded by the exported batch, int8 calibration of `forward` from `calib/`
/// (prior latents and posterior samples of training images) and of `encode` from the
/// converter's default for extra entries (N(0, 1) inputs).
pub fn vae_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    let bounds: Bounds = [("n".to_string(), super::max_batch_of(&dir.join("decoder.onnx"))?)].into_iter().collect();
    Ok(Options {
        quant,
        bounds,
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode: false,
        extra_entries: vec![("encode".into(), dir.join("encoder.onnx"))],
    })
}

/// A converted VAE on the host runtime, run in batches of its bound `n` (the last one padded).
pub struct HostVae<'a> {
    /// The `.mote` bytes.
    pub bytes: &'a [u8],
    /// Batch bound.
    pub n: usize,
    /// Latent dimension.
    pub latent: usize,
}

impl HostVae<'_> {
    /// Runs `entry` over rows of `width` values in batches, returning every output's rows.
    fn batched(&self, entry: &str, rows: &[f32], width: usize, shape: &[usize]) -> Result<Vec<Vec<f32>>> {
        let total = rows.len() / width;
        let calls: Vec<Vec<Array>> = rows
            .chunks(self.n * width)
            .map(|c| {
                let mut b = c.to_vec();
                b.resize(self.n * width, 0.0);
                let mut s = vec![self.n];
                s.extend_from_slice(shape);
                vec![Array::f32(s, b)]
            })
            .collect();
        let padded_rows = calls.len() * self.n;
        let results = host::run_sequence_observed(self.bytes, entry, &calls, |_, _| {})?;
        let mut outs: Vec<Vec<f32>> = Vec::new();
        for r in results {
            outs.resize(r.len(), Vec::new());
            for (o, a) in outs.iter_mut().zip(r) {
                o.extend(a.to_f32());
            }
        }
        for o in &mut outs {
            let per_row = o.len() / padded_rows.max(1);
            o.truncate(total * per_row);
        }
        Ok(outs)
    }
}

impl VaeRunner for HostVae<'_> {
    fn encode(&mut self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut out = self.batched("encode", images, PIXELS, &[1, SIDE, SIDE])?;
        if out.len() != 2 {
            bail!("encode must have two outputs (mu, logvar), has {}", out.len());
        }
        let logvar = out.pop().unwrap_or_default();
        Ok((out.pop().unwrap_or_default(), logvar))
    }

    fn decode(&mut self, z: &[f32]) -> Result<Vec<f32>> {
        Ok(self.batched("forward", z, self.latent, &[self.latent])?.remove(0))
    }
}

/// Measures the VAE family in `dir`.
pub fn evaluate_vae(dir: &Path) -> Result<VaeFigures> {
    let report = VaeReport::read(dir)?;
    let latent = report.options.config.latent;
    let n = super::max_batch_of(&dir.join("decoder.onnx"))?;
    let (dec_onnx, enc_onnx) = (dir.join("decoder.onnx"), dir.join("encoder.onnx"));
    let f32m = convert::convert(&dec_onnx, &vae_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&dec_onnx, &vae_options(dir, QuantMode::Int8)?)?;
    let entries = f32m.inspection.entries.iter().map(|e| e.entry.clone()).collect();

    // Golden parity: encode on golden/image.npy, forward on golden/mu.npy (reconstructions)
    // and golden/z.npy (samples).
    let golden = |name: &str| Array::read_npy(&dir.join("golden").join(name));
    let (gx, gmu, gz) = (golden("image.npy")?, golden("mu.npy")?, golden("z.npy")?);
    let enc = host::run(&f32m.bytes, "encode", std::slice::from_ref(&gx))?;
    let recon = host::run(&f32m.bytes, "forward", std::slice::from_ref(&gmu))?.remove(0).to_f32();
    let sample = host::run(&f32m.bytes, "forward", std::slice::from_ref(&gz))?.remove(0).to_f32();
    let te = verify::tract_reference(&enc_onnx, std::slice::from_ref(&gx))?;
    let tr = verify::tract_reference(&dec_onnx, std::slice::from_ref(&gmu))?.remove(0).to_f32();
    let ts = verify::tract_reference(&dec_onnx, std::slice::from_ref(&gz))?.remove(0).to_f32();
    let vs_tract = max_abs(&enc[0].to_f32(), &te[0].to_f32())
        .max(max_abs(&enc[1].to_f32(), &te[1].to_f32()))
        .max(max_abs(&recon, &tr))
        .max(max_abs(&sample, &ts));
    let encode_vs_candle =
        max_abs(&enc[0].to_f32(), &gmu.to_f32()).max(max_abs(&enc[1].to_f32(), &golden("logvar.npy")?.to_f32()));
    let decode_vs_candle =
        max_abs(&recon, &golden("recon.npy")?.to_f32()).max(max_abs(&sample, &golden("sample.npy")?.to_f32()));
    let recon8 = host::run(&i8m.bytes, "forward", std::slice::from_ref(&gmu))?.remove(0).to_f32();
    let sample8 = host::run(&i8m.bytes, "forward", std::slice::from_ref(&gz))?.remove(0).to_f32();
    let int8_vs_f32 = max_abs(&recon8, &recon).max(max_abs(&sample8, &sample));

    let test = Array::read_npy(&dir.join("data/test.npy"))?.to_f32();
    let r32: Scored = score(&mut HostVae { bytes: &f32m.bytes, n, latent }, &test, latent)?;
    let r8: Scored = score(&mut HostVae { bytes: &i8m.bytes, n, latent }, &test, latent)?;

    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    let ((arena_f32, lower_bound_f32), (arena_int8, lower_bound_int8)) =
        (f32m.arena_and_lower_bound(), i8m.arena_and_lower_bound());
    Ok(VaeFigures {
        params: stored_params(&f32m.bytes)?,
        entries,
        flash_f32: f32m.bytes.len(),
        flash_int8: i8m.bytes.len(),
        arena_f32,
        lower_bound_f32,
        arena_int8,
        lower_bound_int8,
        batch: n,
        macs_decode: i8m.entry_macs("forward"),
        macs_encode: i8m.entry_macs("encode"),
        f32_vs_tract_max_abs: vs_tract,
        encode_vs_candle_max_abs: encode_vs_candle,
        decode_vs_candle_max_abs: decode_vs_candle,
        int8_vs_f32_max_abs: int8_vs_f32,
        test_images: test.len() / PIXELS,
        f32: r32.scores,
        int8: r8.scores,
        report,
        committed_f32_up_to_date: read("model.mote") == f32m.bytes,
        committed_int8_up_to_date: read("model.int8.mote") == i8m.bytes,
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        recon_f32: r32.recon,
        recon_int8: r8.recon,
        test,
    })
}
