//! Figures of the GAN family measured through the converter and the runtime: the generator
//! (`forward`, batch-norm folded into the transposed convolutions), sample quality of runtime
//! samples against held-out glyphs and the baselines (f32 and int8), and parity with tract and
//! candle.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_gan(std::path::Path::new("models/gan"))?;
//! assert!(f.energy_f32[1] < f.report.energy_mean_image[1]);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::Bounds;
use crate::verify;
use crate::zoo::gan::GanReport;
use crate::zoo::vae::train::{energies, gaussians, LATENT_SEED};
use crate::zoo::vae::PIXELS;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

/// Everything measured about the GAN folder (`models/gan`).
#[derive(Debug, Clone, Serialize)]
pub struct GanFigures {
    /// Real-valued weights stored in the f32 file.
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// f32 arena bytes and lower bound.
    pub arena_f32: (usize, usize),
    /// int8 arena bytes and lower bound.
    pub arena_int8: (usize, usize),
    /// Batch bound `n`.
    pub batch: usize,
    /// MACs of one `forward` call on a full batch.
    pub macs: u64,
    /// Ops of the int8 `forward` entry, in order (no batch-norm may remain).
    pub ops: Vec<String>,
    /// f32 `.mote` vs tract on the golden batch, max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` vs candle's golden samples, max-abs.
    pub f32_vs_candle_max_abs: f32,
    /// int8 vs f32 images on the golden batch, max-abs.
    pub int8_vs_f32_max_abs: f32,
    /// Energy distances `[pixels, local features]` of f32 runtime samples to the test set.
    pub energy_f32: [f64; 2],
    /// The same for the int8 file.
    pub energy_int8: [f64; 2],
    /// The training report (candle figures and baselines).
    pub report: GanReport,
    /// Whether the committed files equal fresh conversions (f32, int8).
    pub committed_up_to_date: (bool, bool),
    /// f32 runtime samples (for plots).
    #[serde(skip)]
    pub samples_f32: Vec<f32>,
    /// int8 runtime samples.
    #[serde(skip)]
    pub samples_int8: Vec<f32>,
    /// The test images.
    #[serde(skip)]
    pub test: Vec<f32>,
}

impl GanFigures {
    /// The report row: task metric = energy distance (local features) of samples to held-out
    /// glyphs; MACs per generated image.
    pub fn summary(&self) -> FamilyFigures {
        FamilyFigures {
            params: self.params,
            flash_f32: self.flash_f32,
            flash_int8: self.flash_int8,
            arena_int8: self.arena_int8.0,
            lower_bound_int8: self.arena_int8.1,
            state_int8: 0,
            macs_per_token: self.macs / self.batch.max(1) as u64,
            f32_vs_tract_max_abs: self.f32_vs_tract_max_abs,
            metric: TaskMetric { name: "energy dist".into(), f32: self.energy_f32[1], int8: self.energy_int8[1] },
            committed_int8_up_to_date: self.committed_up_to_date.1,
        }
    }
}

/// Options converting `generator.onnx`: `n` bounded by the exported batch, int8 calibration
/// from `calib/` (N(0, 1) latents).
pub fn gan_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    let bounds: Bounds = [("n".to_string(), super::max_batch_of(&dir.join("generator.onnx"))?)].into_iter().collect();
    Ok(Options {
        quant,
        bounds,
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode: false,
        extra_entries: Vec::new(),
    })
}

/// Generates one image per latent row of `z` (`L` values each) on the host runtime.
pub fn generate(bytes: &[u8], z: &[f32], latent: usize, n: usize) -> Result<Vec<f32>> {
    let rows = z.len() / latent;
    let calls: Vec<Vec<Array>> = z
        .chunks(n * latent)
        .map(|c| {
            let mut b = c.to_vec();
            b.resize(n * latent, 0.0);
            vec![Array::f32(vec![n, latent], b)]
        })
        .collect();
    let mut out = Vec::with_capacity(rows * PIXELS);
    for r in host::run_sequence_observed(bytes, "forward", &calls, |_, _| {})? {
        out.extend(r[0].to_f32());
    }
    out.truncate(rows * PIXELS);
    Ok(out)
}

/// Measures the GAN family in `dir`.
pub fn evaluate_gan(dir: &Path) -> Result<GanFigures> {
    let report = GanReport::read(dir)?;
    let l = report.options.config.latent;
    let n = super::max_batch_of(&dir.join("generator.onnx"))?;
    let onnx = dir.join("generator.onnx");
    let f32m = convert::convert(&onnx, &gan_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&onnx, &gan_options(dir, QuantMode::Int8)?)?;
    let gz = Array::read_npy(&dir.join("golden/z.npy"))?;
    let want = Array::read_npy(&dir.join("golden/sample.npy"))?.to_f32();
    let got = host::run(&f32m.bytes, "forward", std::slice::from_ref(&gz))?.remove(0).to_f32();
    let got8 = host::run(&i8m.bytes, "forward", std::slice::from_ref(&gz))?.remove(0).to_f32();
    let tract = verify::tract_reference(&onnx, std::slice::from_ref(&gz))?.remove(0).to_f32();
    let test = Array::read_npy(&dir.join("data/test.npy"))?.to_f32();
    let z = gaussians(test.len() / PIXELS, l, LATENT_SEED);
    let samples_f32 = generate(&f32m.bytes, &z, l, n)?;
    let samples_int8 = generate(&i8m.bytes, &z, l, n)?;
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    Ok(GanFigures {
        params: stored_params(&f32m.bytes)?,
        flash_f32: f32m.bytes.len(),
        flash_int8: i8m.bytes.len(),
        arena_f32: f32m.arena_and_lower_bound(),
        arena_int8: i8m.arena_and_lower_bound(),
        batch: n,
        macs: i8m.entry_macs("forward"),
        ops: i8m.inspection.ops.iter().map(|o| o.op.clone()).collect(),
        f32_vs_tract_max_abs: max_abs(&got, &tract),
        f32_vs_candle_max_abs: max_abs(&got, &want),
        int8_vs_f32_max_abs: max_abs(&got8, &got),
        energy_f32: energies(&samples_f32, &test),
        energy_int8: energies(&samples_int8, &test),
        report,
        committed_up_to_date: (read("model.mote") == f32m.bytes, read("model.int8.mote") == i8m.bytes),
        samples_f32,
        samples_int8,
        test,
    })
}
