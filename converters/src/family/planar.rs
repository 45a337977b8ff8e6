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

use super::coupling::{flow_options, run_batched};
use super::{max_abs, stored_params, FlowFigures};
use crate::array::Array;
use crate::convert::{self, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::verify;
use crate::zoo::coupling::train::{latents, max_abs_points, nll_per_dim, BASELINE_SEED, FLOOR_SEED, LATENT_SEED};
use crate::zoo::planar::PlanarReport;
use crate::zoo::toy2d::{energy_distance, two_moons, unflatten, Gaussian2, Point};
use anyhow::{bail, Result};
use std::path::Path;

/// Options converting `models/planar`: `forward.onnx` with `inverse.onnx` as the second entry
/// (the coupling flows' [`flow_options`]: `n` bounded by the exported batch, `forward`
/// calibrated on `calib/`, `inverse` on N(0, 1) latents).
pub fn planar_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    flow_options(dir, quant)
}

/// The runtime measurements of one file.
struct Run {
    nll: f64,
    z: Vec<Point>,
    invertibility: f32,
    invertibility_mean: f64,
    samples: Vec<Point>,
}

fn run_file(bytes: &[u8], test: &[Point], latents: &[Point], n: usize) -> Result<Run> {
    let fwd = run_batched(bytes, "forward", test, n)?;
    let [z, lp] = &fwd[..] else { bail!("forward must have two outputs (z, log_prob), has {}", fwd.len()) };
    let z = unflatten(z);
    let back = unflatten(&run_batched(bytes, "inverse", &z, n)?.remove(0));
    let samples = unflatten(&run_batched(bytes, "inverse", latents, n)?.remove(0));
    let total: f64 = back.iter().zip(test).map(|(p, q)| ((p[0] - q[0]).abs() + (p[1] - q[1]).abs()) as f64).sum();
    Ok(Run {
        nll: nll_per_dim(lp),
        invertibility: max_abs_points(&back, test),
        invertibility_mean: total / (2 * test.len().max(1)) as f64,
        z,
        samples,
    })
}

fn peak(c: &Converted) -> (usize, usize) {
    (c.inspection.arena_bytes, c.plans.iter().map(|p| p.lower_bound).max().unwrap_or(0))
}

fn macs(c: &Converted, entry: &str) -> u64 {
    c.inspection.entries.iter().find(|e| e.entry == entry).map(|e| e.macs).unwrap_or(0)
}

/// Measures the planar flow in `dir` (`models/planar`).
pub fn evaluate_planar(dir: &Path) -> Result<FlowFigures> {
    let report = PlanarReport::read(dir)?;
    let n = report.options.config.max_batch;
    let (fwd_onnx, inv_onnx) = (dir.join("forward.onnx"), dir.join("inverse.onnx"));
    let f32m = convert::convert(&fwd_onnx, &planar_options(dir, QuantMode::F32)?)?;
    let i8m = convert::convert(&fwd_onnx, &planar_options(dir, QuantMode::Int8)?)?;
    let single = |p: &Path| -> Result<usize> {
        let o = Options { extra_entries: Vec::new(), ..planar_options(dir, QuantMode::F32)? };
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
    let mut vs_tract = max_abs(&fwd[0].to_f32(), &tf[0].to_f32()).max(max_abs(&fwd[1].to_f32(), &tf[1].to_f32()));
    vs_tract = vs_tract.max(max_abs(&inv[0].to_f32(), &ti[0].to_f32()));
    let golden = |name: &str| -> Result<Vec<f32>> { Ok(Array::read_npy(&dir.join("golden").join(name))?.to_f32()) };
    let log_prob_vs_candle = max_abs(&fwd[1].to_f32(), &golden("log_prob.npy")?);
    let latent_vs_candle =
        max_abs(&fwd[0].to_f32(), &golden("z.npy")?).max(max_abs(&inv[0].to_f32(), &golden("sample.npy")?));

    let o = &report.options;
    let test = unflatten(&Array::read_npy(&dir.join("data/test.npy"))?.to_f32());
    let lat = latents(test.len(), LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &lat, n)?;
    let r8 = run_file(&i8m.bytes, &test, &lat, n)?;
    let gauss = Gaussian2::fit(&o.train_set());
    let samples_baseline = gauss.sample(test.len(), BASELINE_SEED);
    let floor = two_moons(test.len(), o.noise, FLOOR_SEED);

    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    let ((arena_f32, lower_bound_f32), (arena_int8, lower_bound_int8)) = (peak(&f32m), peak(&i8m));
    Ok(FlowFigures {
        params: stored_params(&f32m.bytes)?,
        entries,
        flash_f32: f32m.bytes.len(),
        flash_f32_separate,
        flash_int8: i8m.bytes.len(),
        arena_f32,
        lower_bound_f32,
        arena_int8,
        lower_bound_int8,
        state_int8: i8m.inspection.state_bytes,
        batch: n,
        macs_forward: macs(&i8m, "forward"),
        macs_inverse: macs(&i8m, "inverse"),
        f32_vs_tract_max_abs: vs_tract,
        log_prob_vs_candle_max_abs: log_prob_vs_candle,
        latent_vs_candle_max_abs: latent_vs_candle,
        invertibility_f32: r32.invertibility,
        invertibility_int8: r8.invertibility,
        invertibility_int8_mean: r8.invertibility_mean,
        test_points: test.len(),
        nll_candle: report.test_nll,
        nll_f32: r32.nll,
        nll_int8: r8.nll,
        baseline_nll: gauss.nll_per_dim(&test),
        energy_f32: energy_distance(&r32.samples, &test),
        energy_int8: energy_distance(&r8.samples, &test),
        energy_baseline: energy_distance(&samples_baseline, &test),
        energy_floor: energy_distance(&floor, &test),
        committed_f32_up_to_date: read("model.mote") == f32m.bytes,
        committed_int8_up_to_date: read("model.int8.mote") == i8m.bytes,
        samples_f32: r32.samples,
        samples_int8: r8.samples,
        samples_baseline,
        latents_f32: r32.z,
        test,
    })
}
