//! Figures of the autoregressive flows (MAF, IAF, the distilled IAF student `pwn`) measured
//! through the converter and the runtime: both directions as two entries of one `.mote`
//! (weights stored once), MACs per sample of each direction (one pass vs sequential), exact
//! log-likelihood on the test set (f32 and int8) against a fitted Gaussian, sample quality
//! (energy distance of runtime samples to held-out data), invertibility, parity with tract and
//! candle, the masks baked into the weights and the autoregressive property on the runtime.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_ar_flow(std::path::Path::new("models/maf"))?;
//! assert!(f.nll_f32 < f.baseline_nll);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::two_way::golden_parity;
use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::zoo::autoregressive::data::{self, GaussianNd, DIM};
use crate::zoo::autoregressive::train::{latents, FlowReport, BATCH_ROWS, LATENT_SEED};
use crate::zoo::autoregressive::{Flow, FlowConfig};
use crate::zoo::toy2d;
use anyhow::{anyhow, Context, Result};
use prost::Message;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything measured about an autoregressive-flow folder (`models/maf`, `models/iaf`,
/// `models/pwn`).
#[derive(Debug, Clone, Serialize)]
pub struct ArFlowFigures {
    /// `maf`, `iaf` or `pwn`.
    pub family: String,
    /// Real-valued weights stored in the f32 file (shared by both entries, counted once).
    pub params: usize,
    /// Entry points of the file.
    pub entries: Vec<String>,
    /// f32 file bytes (both entries).
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// Rows per call (the bound of `n`).
    pub batch: usize,
    /// MACs per sample of `forward` (density).
    pub macs_forward: u64,
    /// MACs per sample of `inverse` (sampling).
    pub macs_inverse: u64,
    /// f32 `.mote` against tract on the golden inputs (both entries, all outputs), max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 runtime `log_prob` against candle's golden values, max-abs (nats).
    pub log_prob_vs_candle_max_abs: f32,
    /// f32 runtime `z` and `inverse` samples against candle's golden values, max-abs.
    pub latent_vs_candle_max_abs: f32,
    /// max |inverse(forward(x)) − x| over the test set on the runtime, f32 file.
    pub invertibility_f32: f32,
    /// The same with the int8 file.
    pub invertibility_int8: f32,
    /// Test points scored.
    pub test_points: usize,
    /// Test NLL (nats/dim) in candle, from the training report.
    pub nll_candle: f64,
    /// Test NLL (nats/dim) of the f32 file.
    pub nll_f32: f64,
    /// Test NLL (nats/dim) of the int8 file.
    pub nll_int8: f64,
    /// Test NLL (nats/dim) of a full-covariance Gaussian fitted on the training set.
    pub baseline_nll: f64,
    /// Energy distance to the held-out set of runtime samples (seeded `mote::rng::Rng`
    /// latents through `inverse`), f32 file.
    pub energy_f32: f64,
    /// The same, int8 file.
    pub energy_int8: f64,
    /// Energy distance of Gaussian-baseline samples to the held-out set.
    pub energy_baseline: f64,
    /// Energy distance of the test set to the held-out set (two data samples: the floor).
    pub energy_floor: f64,
    /// Masked-out weight entries in the ONNX files (all must be exact zeros).
    pub masked_weights: usize,
    /// Masked-out weight entries that are not exactly zero.
    pub masked_nonzero: usize,
    /// Runtime check of layer 0 alone (f32 and int8 files): (i, j) pairs where perturbing `x_j`
    /// changed `z_i` although `i < j` in the order (must be 0).
    pub autoregressive_violations: usize,
    /// Pairs with `i ≥ j` where the perturbation did reach `z_i`, and all such pairs.
    pub autoregressive_reached: (usize, usize),
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
    /// Teacher comparison (the distilled student only).
    pub distill: Option<DistillFigures>,
}

/// The distilled student against its MAF teacher, both on the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct DistillFigures {
    /// Teacher folder.
    pub teacher: String,
    /// Teacher sampling MACs per sample (its sequential `inverse`).
    pub teacher_sampling_macs: u64,
    /// Student sampling MACs per sample (its one-pass `inverse`).
    pub student_sampling_macs: u64,
    /// `teacher_sampling_macs / student_sampling_macs`.
    pub sampling_speedup: f64,
    /// Teacher's runtime test NLL (f32, nats/dim).
    pub teacher_nll_f32: f64,
    /// Energy distance of teacher runtime samples to held-out, f32 / int8.
    pub teacher_energy: (f64, f64),
    /// Teacher NLL (f32 runtime) of student f32 runtime samples, nats/dim.
    pub teacher_nll_of_student_samples: f64,
    /// Teacher NLL (f32 runtime) of its own f32 runtime samples (its entropy), nats/dim.
    pub teacher_nll_of_teacher_samples: f64,
}

impl ArFlowFigures {
    /// The report row: MACs per sample of the sampling direction; task metric = test NLL.
    pub fn summary(&self) -> FamilyFigures {
        FamilyFigures {
            params: self.params,
            flash_f32: self.flash_f32,
            flash_int8: self.flash_int8,
            arena_int8: self.arena_int8,
            lower_bound_int8: self.lower_bound_int8,
            state_int8: 0,
            macs_per_token: self.macs_inverse,
            f32_vs_tract_max_abs: self.f32_vs_tract_max_abs,
            metric: TaskMetric { name: "NLL nats/dim".into(), f32: self.nll_f32, int8: self.nll_int8 },
            committed_int8_up_to_date: self.committed_int8_up_to_date,
        }
    }
}

/// Conversion options: `n` bounded by [`BATCH_ROWS`], calibration from `calib/`, `inverse.onnx`
/// as the second entry `inverse`.
pub fn ar_flow_options(dir: &Path, quant: QuantMode) -> Options {
    Options {
        quant,
        bounds: [("n".to_string(), BATCH_ROWS)].into_iter().collect(),
        calibration: Some(Calibration::Dir(dir.join("calib"))),
        decode: false,
        extra_entries: vec![("inverse".into(), dir.join("inverse.onnx"))],
    }
}

/// Converts `dir/forward.onnx` + `dir/inverse.onnx` into one `.mote`.
pub fn convert_ar_flow(dir: &Path, quant: QuantMode) -> Result<Converted> {
    convert::convert(&dir.join("forward.onnx"), &ar_flow_options(dir, quant))
}

/// Runs `entry` over `rows [N, D]` in calls of [`BATCH_ROWS`] rows (the last one zero-padded);
/// returns each output concatenated over the rows.
pub fn run_rows(bytes: &[u8], entry: &str, rows: &[f32], dim: usize) -> Result<Vec<Vec<f32>>> {
    let n = rows.len() / dim;
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for start in (0..n).step_by(BATCH_ROWS) {
        let take = (n - start).min(BATCH_ROWS);
        let mut chunk = rows[start * dim..(start + take) * dim].to_vec();
        chunk.resize(BATCH_ROWS * dim, 0.0);
        let got = host::run(bytes, entry, &[Array::f32(vec![BATCH_ROWS, dim], chunk)])?;
        outs.resize(got.len(), Vec::new());
        for (o, a) in outs.iter_mut().zip(got) {
            let v = a.to_f32();
            let cols = v.len() / BATCH_ROWS;
            o.extend_from_slice(&v[..take * cols]);
        }
    }
    Ok(outs)
}

fn nll_per_dim(log_prob: &[f32], dim: usize) -> f64 {
    -log_prob.iter().map(|&v| f64::from(v)).sum::<f64>() / (log_prob.len() * dim) as f64
}

fn macs(c: &Converted, entry: &str) -> u64 {
    c.entry_macs(entry) / BATCH_ROWS as u64
}

/// NLL (nats/dim) of `x` under the model `bytes`.
fn runtime_nll(bytes: &[u8], x: &[f32]) -> Result<f64> {
    Ok(nll_per_dim(&run_rows(bytes, "forward", x, DIM)?[1], DIM))
}

/// What one file does on the test set and the seeded latents.
struct Run {
    nll: f64,
    invertibility: f32,
    samples: Vec<f32>,
}

fn run_file(bytes: &[u8], test: &[f32], z: &[f32]) -> Result<Run> {
    let fwd = run_rows(bytes, "forward", test, DIM)?;
    let back = run_rows(bytes, "inverse", &fwd[0], DIM)?.remove(0);
    let samples = run_rows(bytes, "inverse", z, DIM)?.remove(0);
    Ok(Run { nll: nll_per_dim(&fwd[1], DIM), invertibility: max_abs(&back, test), samples })
}

/// Every initializer of a masked layer in `onnx` against the masks of a flow built with `cfg`:
/// (masked-out entries, of which non-zero).
fn masked_zeros(onnx: &Path, cfg: FlowConfig) -> Result<(usize, usize)> {
    let model = tract_onnx::pb::ModelProto::decode(&std::fs::read(onnx)?[..])?;
    let graph = model.graph.context("ONNX file without a graph")?;
    let inits: HashMap<&str, &[u8]> = graph.initializer.iter().map(|t| (t.name.as_str(), &t.raw_data[..])).collect();
    let reference = Flow::new(cfg, 0)?;
    let (mut masked, mut nonzero) = (0, 0);
    for (k, l) in reference.layers().iter().enumerate() {
        let names = (0..cfg.hidden_layers).map(|h| format!("h{h}")).chain(["mu".into(), "alpha".into()]);
        for (m, name) in l.made().masked_layers().into_iter().zip(names) {
            let key = format!("{}.l{k}.{name}.weight", cfg.kind.name());
            let raw = inits.get(key.as_str()).ok_or_else(|| anyhow!("{}: no initializer {key}", onnx.display()))?;
            let mask = crate::zoo::layers::tensor_data(m.mask())?;
            for (c, &keep) in raw.chunks_exact(4).zip(&mask) {
                if keep == 0.0 {
                    masked += 1;
                    nonzero += usize::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) != 0.0);
                }
            }
        }
    }
    Ok((masked, nonzero))
}

/// Layer 0 of the flow alone (weights from the committed ONNX), converted f32 and int8 and run
/// on the runtime: perturbs each `x_j` of a few test rows and records which `z_i` change.
/// Returns (violations `i < j` changed, (reached `i ≥ j`, all `i ≥ j` pairs)).
fn autoregressive_check(dir: &Path, cfg: FlowConfig, test: &[f32]) -> Result<(usize, (usize, usize))> {
    static SCRATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let one = FlowConfig { layers: 1, ..cfg };
    let flow = Flow::load_onnx(one, &dir.join("forward.onnx"))?;
    let scratch = std::env::temp_dir().join(format!("mote-ar-{}-{unique}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let path: PathBuf = scratch.join("layer0.onnx");
    std::fs::write(&path, flow.export_forward()?)?;
    let mut opts = ar_flow_options(dir, QuantMode::F32);
    opts.extra_entries.clear();
    let deg = flow.layers()[0].made().degrees().to_vec();
    let (mut bad, mut reached, mut allowed) = (0, 0, 0);
    for quant in [QuantMode::F32, QuantMode::Int8] {
        opts.quant = quant;
        let bytes = convert::convert(&path, &opts)?.bytes;
        let rows = &test[..BATCH_ROWS * DIM];
        let base = run_rows(&bytes, "forward", rows, DIM)?.remove(0);
        for j in 0..DIM {
            let mut x = rows.to_vec();
            for r in 0..BATCH_ROWS {
                x[r * DIM + j] += 0.5;
            }
            let z = run_rows(&bytes, "forward", &x, DIM)?.remove(0);
            for i in 0..DIM {
                let changed = (0..BATCH_ROWS).any(|r| z[r * DIM + i] != base[r * DIM + i]);
                if deg[i] < deg[j] {
                    bad += usize::from(changed);
                } else {
                    allowed += 1;
                    reached += usize::from(changed);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((bad, (reached, allowed)))
}

/// Measures the flow in `dir` (`forward.onnx`, `inverse.onnx`, `train_report.json`,
/// `golden/`, `calib/`); a distilled student (`pwn`) is also compared with its teacher in
/// the sibling folder its report names.
pub fn evaluate_ar_flow(dir: &Path) -> Result<ArFlowFigures> {
    let report = FlowReport::read(dir)?;
    let f32m = convert_ar_flow(dir, QuantMode::F32)?;
    let i8m = convert_ar_flow(dir, QuantMode::Int8)?;
    let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();

    let (f32_vs_tract_max_abs, log_prob_vs_candle_max_abs, latent_vs_candle_max_abs) = golden_parity(dir, &f32m.bytes)?;

    let n = report.options.eval_points;
    let test = data::moons8(n, data::TEST_SEED);
    let heldout = data::moons8(n, data::HELDOUT_SEED);
    let train = data::moons8(report.options.train_points, data::TRAIN_SEED);
    let gauss = GaussianNd::fit(&train, DIM);
    let zs = latents(n, DIM, LATENT_SEED);
    let r32 = run_file(&f32m.bytes, &test, &zs)?;
    let r8 = run_file(&i8m.bytes, &test, &zs)?;
    let palette = [(90, 90, 90), (30, 90, 200), (200, 80, 40)].map(|(r, g, b)| [r, g, b]);
    toy2d::scatter_panels_png(
        &dir.join("runtime_samples.png"),
        &[
            &[(&data::first_two(&heldout, DIM), palette[0])],
            &[(&data::first_two(&r32.samples, DIM), palette[1])],
            &[(&data::first_two(&r8.samples, DIM), palette[2])],
        ],
        240,
        3.0,
    )?;
    let (masked_weights, masked_nonzero) = masked_zeros(&dir.join("forward.onnx"), report.config)?;
    let (autoregressive_violations, autoregressive_reached) = autoregressive_check(dir, report.config, &test)?;

    let distill = match &report.distill {
        None => None,
        Some(d) => {
            let tdir = dir.parent().unwrap_or(Path::new(".")).join(&d.teacher);
            let t32 = convert_ar_flow(&tdir, QuantMode::F32)?;
            let t8 = convert_ar_flow(&tdir, QuantMode::Int8)?;
            let tr32 = run_file(&t32.bytes, &test, &zs)?;
            let tr8 = run_file(&t8.bytes, &test, &zs)?;
            let (teacher, student) = (macs(&t32, "inverse"), macs(&f32m, "inverse"));
            Some(DistillFigures {
                teacher: d.teacher.clone(),
                teacher_sampling_macs: teacher,
                student_sampling_macs: student,
                sampling_speedup: teacher as f64 / student.max(1) as f64,
                teacher_nll_f32: tr32.nll,
                teacher_energy: (
                    data::energy_distance(&tr32.samples, &heldout, DIM),
                    data::energy_distance(&tr8.samples, &heldout, DIM),
                ),
                teacher_nll_of_student_samples: runtime_nll(&t32.bytes, &r32.samples)?,
                teacher_nll_of_teacher_samples: runtime_nll(&t32.bytes, &tr32.samples)?,
            })
        }
    };

    Ok(ArFlowFigures {
        family: report.family.clone(),
        params: stored_params(&f32m.bytes)?,
        entries: f32m.inspection.entries.iter().map(|e| e.entry.clone()).collect(),
        flash_f32: f32m.bytes.len(),
        flash_int8: i8m.bytes.len(),
        arena_int8: i8m.inspection.arena_bytes,
        lower_bound_int8: i8m.arena_and_lower_bound().1,
        batch: BATCH_ROWS,
        macs_forward: macs(&f32m, "forward"),
        macs_inverse: macs(&f32m, "inverse"),
        f32_vs_tract_max_abs,
        log_prob_vs_candle_max_abs,
        latent_vs_candle_max_abs,
        invertibility_f32: r32.invertibility,
        invertibility_int8: r8.invertibility,
        test_points: n,
        nll_candle: report.test_nll_per_dim,
        nll_f32: r32.nll,
        nll_int8: r8.nll,
        baseline_nll: gauss.nll_per_dim(&test),
        energy_f32: data::energy_distance(&r32.samples, &heldout, DIM),
        energy_int8: data::energy_distance(&r8.samples, &heldout, DIM),
        energy_baseline: data::energy_distance(&gauss.sample(n, LATENT_SEED), &heldout, DIM),
        energy_floor: data::energy_distance(&test, &heldout, DIM),
        masked_weights,
        masked_nonzero,
        autoregressive_violations,
        autoregressive_reached,
        committed_int8_up_to_date: committed == i8m.bytes,
        distill,
    })
}
