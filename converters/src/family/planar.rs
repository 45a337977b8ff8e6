//! Figures of the planar flow measured through the converter and the runtime: both directions
//! as two entries of one `.mote` (weights stored once; `forward` inverts every layer with
//! unrolled Newton steps), exact log-likelihood on held-out data (f32 and int8) against a
//! fitted Gaussian, sample quality (energy distance of runtime samples to held-out data),
//! invertibility and parity with tract and candle. The figures share the coupling flows'
//! [`FlowFigures`] layout, so their card section and report row read the same.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_planar(std::path::Path::new("models/planar"))?;
//! assert!(f.nll_f32 < f.baseline_nll);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::coupling::measure_2d_flow;
use super::two_way::flow_options;
use super::FlowFigures;
use crate::convert::Options;
use crate::emit::dtypes::QuantMode;
use crate::zoo::planar::PlanarReport;
use anyhow::Result;
use std::path::Path;

/// Options converting `models/planar`: `forward.onnx` with `inverse.onnx` as the second entry
/// (the flows' shared [`flow_options`]: `n` bounded by the exported batch, `forward`
/// calibrated on `calib/`, `inverse` on N(0, 1) latents).
pub fn planar_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    flow_options(dir, quant)
}

/// Measures the planar flow in `dir` (`models/planar`), as the coupling flows are measured.
pub fn evaluate_planar(dir: &Path) -> Result<FlowFigures> {
    let report = PlanarReport::read(dir)?;
    let o = &report.options;
    measure_2d_flow(dir, report.test_nll, &o.train_set(), o.noise)
}
