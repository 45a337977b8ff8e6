//! Training the autoregressive flows on `moons8` and writing their artefacts: MAF and IAF by
//! maximum likelihood, and an IAF student distilled from a trained MAF teacher by
//! probability-density distillation (Parallel WaveNet): minimise `KL(q_student ‖ p_teacher) =
//! E_z[log q(x) − log p(x)]` with `x = student(z)`, `z ~ N(0, I)`.
//!
//! ```no_run
//! use mote_converters::zoo::autoregressive::{train_flow, write_flow_card, FlowKind, FlowTrainOptions};
//! let out = std::path::Path::new("models/maf");
//! let report = train_flow(out, FlowKind::Maf, &FlowTrainOptions::default())?;
//! write_flow_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{self, DIM};
use super::{Flow, FlowConfig, FlowKind};
use crate::array::Array;
use crate::zoo::layers::tensor_data;
use crate::zoo::rng::SplitMix64;
use crate::zoo::toy2d;
use crate::zoo::trainer::{schedule_of, Curve, Trainer};

/// Rows per runtime call (the bound of the symbolic dim `n`).
pub const BATCH_ROWS: usize = 64;
/// Seed of the `mote::rng::Rng` latents every sampler is scored with.
pub const LATENT_SEED: u64 = 0x5a3b1e;

/// Training budget and settings. `Default` is the zoo budget of MAF.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowTrainOptions {
    /// Optimiser steps.
    pub steps: usize,
    /// Points (or latents, when distilling) per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Seed for initialisation and batching.
    pub seed: u64,
    /// Size of the fixed training set.
    pub train_points: usize,
    /// Size of the test set (NLL) and of the held-out set (energy distance).
    pub eval_points: usize,
    /// Distillation only: over this fraction of the steps the teacher's log-density is scaled
    /// by `β` rising linearly from 0.05 to 1 (the student first matches the flattened teacher
    /// `p^β`, which keeps reverse KL from collapsing onto one region early); 0 = no annealing.
    #[serde(default)]
    pub anneal_fraction: f64,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for FlowTrainOptions {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 256,
            lr: 2e-3,
            warmup: 100,
            weight_decay: 0.0,
            seed: 7,
            train_points: 20_000,
            eval_points: 1024,
            anneal_fraction: 0.0,
            quiet: false,
        }
    }
}

impl FlowTrainOptions {
    /// The zoo budget of `family` (`maf`, `iaf` by maximum likelihood, `pwn` distillation).
    pub fn for_family(family: &str) -> Self {
        match family {
            "iaf" => Self { steps: 1500, ..Self::default() },
            "pwn" => Self { steps: 8000, anneal_fraction: 0.3, ..Self::default() },
            _ => Self::default(),
        }
    }
}

/// The teacher of a distilled student and what distillation measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillReport {
    /// Teacher folder, relative to the student's parent (e.g. `maf`).
    pub teacher: String,
    /// FNV-1a 64 of the teacher's `forward.onnx` at distillation time.
    pub teacher_forward_fnv64: String,
    /// Teacher's test NLL (candle, nats/dim).
    pub teacher_test_nll_per_dim: f64,
    /// `E[log q − log p]` per dim on fresh latents after training (candle).
    pub kl_per_dim: f64,
    /// Teacher NLL of student samples, nats/dim (candle).
    pub teacher_nll_of_student_samples: f64,
    /// Teacher NLL of its own samples (its entropy), nats/dim (candle).
    pub teacher_nll_of_teacher_samples: f64,
    /// Energy distance of teacher samples (candle) to the held-out data.
    pub teacher_energy_candle: f64,
}

/// What training measured; serialisable for the CLI and the model card.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowReport {
    /// `maf`, `iaf` or `pwn`.
    pub family: String,
    /// Architecture.
    pub config: FlowConfig,
    /// Training settings.
    pub options: FlowTrainOptions,
    /// Data set name (`moons8`).
    pub data: String,
    /// Trainable scalars (masked-out weights included).
    pub params: usize,
    /// Weights the masks let through plus biases (what the flow really uses).
    pub effective_params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed training loss at the end (nats/dim: NLL, or KL when distilling).
    pub final_train_loss: f64,
    /// `(step, smoothed loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// Test NLL of the candle model (nats/dim).
    pub test_nll_per_dim: f64,
    /// Full-covariance Gaussian fitted on the training set, test NLL (nats/dim).
    pub gaussian_nll_per_dim: f64,
    /// Energy distance of candle samples (latents from `mote::rng::Rng`) to the held-out set.
    pub energy_candle: f64,
    /// Energy distance of Gaussian-baseline samples to the held-out set.
    pub energy_gaussian: f64,
    /// Energy distance of the test set to the held-out set: two data samples, the floor.
    pub energy_floor: f64,
    /// Max |tract − candle| over `z`, `log_prob` and `inverse` on the golden inputs.
    pub onnx_vs_candle_max_abs: f32,
    /// Distillation details (the `pwn` student only).
    pub distill: Option<DistillReport>,
}

impl FlowReport {
    /// Reads `train_report.json` from a model folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// FNV-1a 64-bit hash, hex.
pub fn fnv64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// `n` standard-normal latents of `dim` coordinates from `mote::rng::Rng::new(seed)` (what
/// the runtime samplers draw), row-major.
pub fn latents(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut r = mote::rng::Rng::new(seed);
    (0..n * dim).map(|_| r.gaussian()).collect()
}

fn tensor(v: Vec<f32>, rows: usize) -> Result<Tensor> {
    let cols = v.len() / rows.max(1);
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}

fn mean_nll(flow: &Flow, x: &[f32]) -> Result<f64> {
    let (_, lp) = flow.forward(&tensor(x.to_vec(), x.len() / flow.config().dim)?)?;
    let lp = tensor_data(&lp)?;
    Ok(-lp.iter().map(|&v| f64::from(v)).sum::<f64>() / (lp.len() * flow.config().dim) as f64)
}

fn sample(flow: &Flow, z: &[f32]) -> Result<Vec<f32>> {
    tensor_data(&flow.inverse(&tensor(z.to_vec(), z.len() / flow.config().dim)?)?)
}

fn train_batch(rng: &mut SplitMix64, train: &[f32], batch: usize) -> Result<Tensor> {
    let n = train.len() / DIM;
    let mut v = Vec::with_capacity(batch * DIM);
    for _ in 0..batch {
        let i = rng.below(n);
        v.extend_from_slice(&train[i * DIM..(i + 1) * DIM]);
    }
    tensor(v, batch)
}

/// Trains a MAF or an IAF on `moons8` by maximum likelihood and writes `forward.onnx`,
/// `inverse.onnx`, `golden/`, `calib/` and `scatter.png` to `out_dir`.
pub fn train_flow(out_dir: &Path, kind: FlowKind, opts: &FlowTrainOptions) -> Result<FlowReport> {
    let flow = Flow::new(FlowConfig::new(kind, DIM), opts.seed)?;
    let train = data::moons8(opts.train_points, data::TRAIN_SEED);
    let mut rng = SplitMix64::new(opts.seed ^ 0xba7c);
    let mut t = Trainer::new(flow.params(), kind.name(), schedule_of!(opts))?;
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        let x = train_batch(&mut rng, &train, opts.batch_size)?;
        let (_, lp) = flow.forward(&x)?;
        let loss = (lp.mean_all()? * (-1.0 / DIM as f64))?;
        t.apply(&loss)?;
        t.record(step, f64::from(loss.to_scalar::<f32>()?), lr, "");
    }
    let (secs, final_loss, curve) = t.finish("");
    finish(out_dir, kind.name(), &flow, opts, &train, (secs, final_loss, curve), None)
}

/// Distils the MAF in `teacher_dir` (`forward.onnx` + `train_report.json`) into an IAF student
/// by minimising `KL(student ‖ teacher)` on the student's own samples; writes the student's
/// artefacts to `out_dir` like [`train_flow`].
pub fn train_distill(out_dir: &Path, teacher_dir: &Path, opts: &FlowTrainOptions) -> Result<FlowReport> {
    let teacher_report = FlowReport::read(teacher_dir)?;
    let teacher_onnx = teacher_dir.join("forward.onnx");
    let teacher = Flow::load_onnx(teacher_report.config, &teacher_onnx)?;
    let student = Flow::new(FlowConfig::new(FlowKind::Iaf, DIM), opts.seed)?;
    let mut rng = SplitMix64::new(opts.seed ^ 0xd157);
    let mut t = Trainer::new(student.params(), "pwn", schedule_of!(opts))?;
    // E[log q(x) − β log p(x)] per dim with x = student(z); β = 1 is KL(q ‖ p).
    let kl = |z: &Tensor, beta: f64| -> Result<Tensor> {
        let (x, logq) = student.sample_with_log_prob(z)?;
        let (_, logp) = teacher.forward(&x)?;
        Ok(((logq - (logp * beta)?)?.mean_all()? * (1.0 / DIM as f64))?)
    };
    let anneal = (opts.anneal_fraction * opts.steps as f64).max(1.0);
    for step in 0..opts.steps {
        let lr = t.set_lr(step);
        let beta = (0.05 + 0.95 * step as f64 / anneal).min(1.0);
        let z = tensor(rng.normal_vec(opts.batch_size * DIM, 1.0), opts.batch_size)?;
        let loss = kl(&z, beta)?;
        t.apply(&loss)?;
        t.record(step, f64::from(loss.to_scalar::<f32>()?), lr, &format!(" β {beta:.2}"));
    }
    let (secs, final_loss, curve) = t.finish("");

    let n = opts.eval_points;
    let z = tensor(latents(n, DIM, LATENT_SEED ^ 0xd1), n)?;
    let kl_per_dim = f64::from(kl(&z, 1.0)?.to_scalar::<f32>()?);
    let z = latents(n, DIM, LATENT_SEED);
    let student_x = sample(&student, &z)?;
    let teacher_x = sample(&teacher, &z)?;
    let heldout = data::moons8(n, data::HELDOUT_SEED);
    let test = data::moons8(n, data::TEST_SEED);
    let distill = DistillReport {
        teacher: teacher_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        teacher_forward_fnv64: fnv64(&std::fs::read(&teacher_onnx)?),
        teacher_test_nll_per_dim: mean_nll(&teacher, &test)?,
        kl_per_dim,
        teacher_nll_of_student_samples: mean_nll(&teacher, &student_x)?,
        teacher_nll_of_teacher_samples: mean_nll(&teacher, &teacher_x)?,
        teacher_energy_candle: data::energy_distance(&teacher_x, &heldout, DIM),
    };
    let train = data::moons8(opts.train_points, data::TRAIN_SEED);
    finish(out_dir, "pwn", &student, opts, &train, (secs, final_loss, curve), Some(distill))
}

fn finish(
    out: &Path,
    family: &str,
    flow: &Flow,
    opts: &FlowTrainOptions,
    train: &[f32],
    (train_seconds, final_train_loss, loss_curve): (f64, f64, Curve),
    distill: Option<DistillReport>,
) -> Result<FlowReport> {
    let n = opts.eval_points;
    let test = data::moons8(n, data::TEST_SEED);
    let heldout = data::moons8(n, data::HELDOUT_SEED);
    let gauss = data::GaussianNd::fit(train, DIM);
    let samples = sample(flow, &latents(n, DIM, LATENT_SEED))?;
    let onnx_vs_candle_max_abs = write_artefacts(out, flow, train, &test)?;
    let (z_test, _) = flow.forward(&tensor(test.clone(), n)?)?;
    let z_test = tensor_data(&z_test)?;
    let purple = [120, 60, 200];
    toy2d::scatter_panels_png(
        &out.join("scatter.png"),
        &[
            &[(&data::first_two(&heldout, DIM), [90, 90, 90])],
            &[(&data::first_two(&samples, DIM), [30, 90, 200])],
            &[(&data::first_two(&z_test, DIM), purple)],
        ],
        240,
        3.0,
    )?;
    let effective_params = flow
        .layers()
        .iter()
        .flat_map(|l| l.made().masked_layers())
        .map(|m| -> Result<usize> {
            let ones = tensor_data(m.mask())?.iter().filter(|&&v| v != 0.0).count();
            Ok(ones + m.mask().dim(1)?)
        })
        .sum::<Result<usize>>()?;
    Ok(FlowReport {
        family: family.into(),
        config: *flow.config(),
        options: opts.clone(),
        data: "moons8".into(),
        params: flow.params().count(),
        effective_params,
        train_seconds,
        final_train_loss,
        loss_curve,
        test_nll_per_dim: mean_nll(flow, &test)?,
        gaussian_nll_per_dim: gauss.nll_per_dim(&test),
        energy_candle: data::energy_distance(&samples, &heldout, DIM),
        energy_gaussian: data::energy_distance(&gauss.sample(n, LATENT_SEED), &heldout, DIM),
        energy_floor: data::energy_distance(&test, &heldout, DIM),
        onnx_vs_candle_max_abs,
        distill,
    })
}

/// Writes both ONNX directions, the golden candle outputs (with `golden/provenance.json`)
/// and calibration batches; returns max |tract − candle|.
fn write_artefacts(out: &Path, flow: &Flow, train: &[f32], test: &[f32]) -> Result<f32> {
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let (fwd, inv) = (out.join("forward.onnx"), out.join("inverse.onnx"));
    std::fs::write(&fwd, flow.export_forward()?)?;
    std::fs::write(&inv, flow.export_inverse()?)?;
    let rows = BATCH_ROWS;
    let x = test[..rows * DIM].to_vec();
    let (z, lp) = flow.forward(&tensor(x.clone(), rows)?)?;
    let (z, lp) = (tensor_data(&z)?, tensor_data(&lp)?);
    let latent = latents(rows, DIM, LATENT_SEED ^ 0x901d);
    let xs = sample(flow, &latent)?;
    let golden = [
        ("x", x.clone(), DIM),
        ("z", z.clone(), DIM),
        ("log_prob", lp.clone(), 1),
        ("latent", latent.clone(), DIM),
        ("sample", xs.clone(), DIM),
    ];
    for (name, v, cols) in golden {
        Array::f32(vec![rows, cols], v).write_npy(&out.join(format!("golden/{name}.npy")))?;
    }
    let provenance = serde_json::json!({
        "written_by": "mote zoo train (converters/src/zoo/autoregressive/train.rs, write_artefacts)",
        "framework": "candle 0.11, f32, CPU",
        "x": "rows 0..64 of the moons8 test set (data::TEST_SEED)",
        "z, log_prob": "Flow::forward(x) of the trained model; log_prob in nats per row",
        "latent": format!("mote::rng::Rng::new({:#x}).gaussian(), 64 x {DIM}", LATENT_SEED ^ 0x901d),
        "sample": "Flow::inverse(latent)",
        "forward.onnx fnv64": fnv64(&std::fs::read(&fwd)?),
        "inverse.onnx fnv64": fnv64(&std::fs::read(&inv)?),
    });
    std::fs::write(out.join("golden/provenance.json"), serde_json::to_string_pretty(&provenance)?)?;
    let t = crate::verify::tract_reference(&fwd, &[Array::f32(vec![rows, DIM], x)])?;
    let ti = crate::verify::tract_reference(&inv, &[Array::f32(vec![rows, DIM], latent)])?;
    let diff = crate::family::max_abs(&t[0].to_f32(), &z)
        .max(crate::family::max_abs(&t[1].to_f32(), &lp))
        .max(crate::family::max_abs(&ti[0].to_f32(), &xs));
    for i in 0..8 {
        let o = (i * 997 % (train.len() / DIM - rows)) * DIM;
        Array::f32(vec![rows, DIM], train[o..o + rows * DIM].to_vec())
            .write_npy(&out.join(format!("calib/s{i}.npy")))?;
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_write_artefacts_and_distil() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_ar_{}", std::process::id()));
        let (maf, pwn) = (dir.join("maf"), dir.join("pwn"));
        std::fs::create_dir_all(&maf)?;
        std::fs::create_dir_all(&pwn)?;
        let opts = FlowTrainOptions {
            steps: 3,
            batch_size: 16,
            warmup: 1,
            train_points: 500,
            eval_points: 128,
            quiet: true,
            ..Default::default()
        };
        let r = train_flow(&maf, FlowKind::Maf, &opts)?;
        assert!(r.test_nll_per_dim.is_finite() && r.onnx_vs_candle_max_abs < 1e-4, "{r:?}");
        std::fs::write(maf.join("train_report.json"), serde_json::to_string(&r)?)?;
        let s = train_distill(&pwn, &maf, &opts)?;
        let d = s.distill.as_ref().expect("distill report");
        // The teacher loads back from its ONNX with the same density.
        assert!((d.teacher_test_nll_per_dim - r.test_nll_per_dim).abs() < 1e-4, "{d:?}");
        for f in ["forward.onnx", "inverse.onnx", "golden/log_prob.npy", "calib/s7.npy", "scatter.png"] {
            assert!(pwn.join(f).exists(), "{f} missing");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
