//! Training a diffusion teacher on labelled data ([`DiffusionData`]: `ddpm2d`'s two moons,
//! `ldm`'s glyph latents) and writing a model's artefacts.
//!
//! Each step draws data `x₀` with its class (replaced by the null class with probability
//! [`TrainOptions::label_dropout`], so one network learns the conditional and the
//! unconditional model), a timestep t uniform in `0..T` and noise ε, forms
//! `x_t = α·x₀ + σ·ε` and regresses `v = α·ε − σ·x₀` (mean squared error, which weights the
//! x₀ error by 1 + SNR).
//!
//! ```no_run
//! use mote_converters::zoo::diffusion::{train_teacher, TrainOptions};
//! let report = train_teacher(std::path::Path::new("models/ddpm2d"), &TrainOptions::default())?;
//! println!("{:.4}", report.final_train_loss);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::{DiffusionData, Labelled, Moons};
use super::metrics::labelled_moons;
use super::sampler::{ddim_sample, initial_noise, Condition, Schedule};
use super::{Denoiser, DenoiserConfig};
use crate::array::Array;
use crate::zoo::coupling::train::{FLOOR_SEED, TEST_SEED, TRAIN_SEED};
use crate::zoo::rng::SplitMix64;
use crate::zoo::toy2d::{two_moons, Point};
use crate::zoo::trainer::{schedule_of, Ema, Trainer};

/// First sampler seed of the evaluation: batch k of samples uses seed `SAMPLE_SEED + k`.
pub const SAMPLE_SEED: u64 = 0x5a3e;
/// Seed of the golden sampler runs (`golden/<model>.sample*.npy`).
pub const GOLDEN_SEED: u64 = 7;
/// Class and guidance scale of the guided golden run.
pub const GOLDEN_GUIDANCE: (usize, f32) = (1, 3.0);

/// Training budget, data and settings. [`TrainOptions::default`] is the zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Architecture.
    pub config: DenoiserConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Points per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Probability of training a point with the null class.
    pub label_dropout: f64,
    /// Seed of the initialisation, batches and noise.
    pub seed: u64,
    /// Decay of an exponential moving average of the weights, exported instead of the last
    /// weights (0: none, the last weights are exported; absent from older reports).
    #[serde(default)]
    pub ema: f64,
    /// Two-moons noise (standard deviation before standardisation; other data ignore it).
    pub noise: f32,
    /// Training rows (a fixed set).
    pub train_points: usize,
    /// Held-out test rows (the sample-quality reference).
    pub test_points: usize,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            config: DenoiserConfig::default(),
            steps: 8000,
            batch_size: 512,
            lr: 2e-3,
            warmup: 200,
            weight_decay: 1e-4,
            label_dropout: 0.15,
            seed: 42,
            ema: 0.0,
            noise: 0.1,
            train_points: 16384,
            test_points: 2048,
            quiet: false,
        }
    }
}

impl TrainOptions {
    /// The labelled training set (seed [`TRAIN_SEED`], the flows' two moons).
    pub fn train_set(&self) -> (Vec<Point>, Vec<usize>) {
        labelled_moons(self.train_points, self.noise, TRAIN_SEED)
    }

    /// The held-out test set (seed [`TEST_SEED`]).
    pub fn test_set(&self) -> Vec<Point> {
        two_moons(self.test_points, self.noise, TEST_SEED)
    }

    /// A fresh draw of the data the size of the test set: its energy distance to the test set
    /// is the metric's noise floor.
    pub fn floor_set(&self) -> Vec<Point> {
        two_moons(self.test_points, self.noise, FLOOR_SEED)
    }
}

/// What teacher training measured in candle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeacherReport {
    /// Training settings (with the architecture).
    pub options: TrainOptions,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Smoothed v-loss at the end.
    pub final_train_loss: f64,
    /// `(step, smoothed loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// The data's sample-quality measure ([`DiffusionData::quality`]: for `ddpm2d` the energy
    /// distance to the test set) of candle's unconditional DDIM samples, `(steps, value)`.
    pub energy_candle: Vec<(usize, f64)>,
    /// The measure for a fresh data draw (the floor).
    pub energy_floor: f64,
    /// tract vs candle on the golden denoiser inputs, max-abs.
    pub onnx_vs_candle_max_abs: f32,
}

impl TeacherReport {
    /// Reads `train_report.json` from the family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Candle's raw output for rows `x` (flattened `[n, D]`) at timestep `t`, all rows of `class`.
pub fn candle_predict(m: &Denoiser, x: &[f32], t: isize, class: usize) -> Result<Vec<f32>> {
    let d = m.config().dim;
    let n = x.len() / d;
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(x.to_vec(), (n, d), &dev)?;
    let tt = Tensor::from_vec(vec![t.max(0) as u32; n], n, &dev)?;
    let ct = Tensor::from_vec(vec![class as u32; n], n, &dev)?;
    Ok(m.forward(&xt, &tt, &ct)?.flatten_all()?.to_vec1()?)
}

/// `count` candle DDIM samples (flattened rows of D values) in batches of `rows` (batch k starts
/// from the runtime's noise for seed `seed + k`), as the runtime evaluation draws them.
pub fn candle_samples(
    m: &Denoiser,
    s: &Schedule,
    steps: usize,
    cond: Condition,
    count: usize,
    rows: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let d = m.config().dim;
    let batches = count.div_ceil(rows.max(1)) as u64;
    let mut x: Vec<f32> = (0..batches).flat_map(|k| initial_noise(d * rows, seed + k)).collect();
    ddim_sample(&mut |x, t, c| candle_predict(m, x, t, c), s, steps, &mut x, cond, m.config().null_class())?;
    x.truncate(count * d);
    Ok(x)
}

/// One noised training batch: `(x_t, t, class, α, σ, x₀, ε)` as tensors (`α`, `σ` as `[n, 1]`).
pub(crate) struct NoisedBatch {
    pub x_t: Tensor,
    pub t: Tensor,
    pub class: Tensor,
    pub alpha: Tensor,
    pub sigma: Tensor,
    pub x0: Tensor,
    pub eps: Tensor,
}

/// Draws a batch of `n` training rows with label dropout `drop`, at timesteps drawn by
/// `pick_t`, noised with fresh ε.
pub(crate) fn noised_batch(
    rng: &mut SplitMix64,
    train: &Labelled,
    s: &Schedule,
    null: usize,
    drop: f64,
    n: usize,
    pick_t: &mut dyn FnMut(&mut SplitMix64) -> isize,
) -> Result<NoisedBatch> {
    let dev = Device::Cpu;
    let (mut x0, mut ts, mut cs, mut al, mut sg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let d = train.dim;
    for _ in 0..n {
        let i = rng.below(train.len());
        x0.extend_from_slice(train.row(i));
        cs.push(if rng.chance(drop) { null } else { train.labels[i] } as u32);
        let t = pick_t(rng);
        ts.push(t.max(0) as u32);
        let (a, sgm) = s.alpha_sigma(t);
        al.push(a as f32);
        sg.push(sgm as f32);
    }
    let eps = Tensor::from_vec(rng.normal_vec(d * n, 1.0), (n, d), &dev)?;
    let x0 = Tensor::from_vec(x0, (n, d), &dev)?;
    let alpha = Tensor::from_vec(al, (n, 1), &dev)?;
    let sigma = Tensor::from_vec(sg, (n, 1), &dev)?;
    let x_t = (x0.broadcast_mul(&alpha)? + eps.broadcast_mul(&sigma)?)?;
    Ok(NoisedBatch {
        x_t,
        t: Tensor::from_vec(ts, n, &dev)?,
        class: Tensor::from_vec(cs, n, &dev)?,
        alpha,
        sigma,
        x0,
        eps,
    })
}

/// Trains the `ddpm2d` teacher on two moons ([`Moons`]) and writes `teacher.onnx`, the data,
/// its golden and calibration files.
pub fn train_teacher(out: &Path, o: &TrainOptions) -> Result<TeacherReport> {
    train_teacher_on(out, o, &Moons::new(o))
}

/// Trains a teacher of `o.config` on `data` and writes `teacher.onnx`, the data
/// ([`DiffusionData::write_data`]), its golden and calibration files.
pub fn train_teacher_on(out: &Path, o: &TrainOptions, data: &dyn DiffusionData) -> Result<TeacherReport> {
    let cfg = o.config;
    ensure!(data.dim() == cfg.dim, "{}-dimensional data for a denoiser of dimension {}", data.dim(), cfg.dim);
    let model = Denoiser::new(cfg, o.seed)?;
    let s = Schedule::cosine(cfg.timesteps);
    let train = data.train_set();
    let mut tr = Trainer::new(model.params(), &format!("{} teacher", data.family()), schedule_of!(o))?;
    let mut average = (o.ema > 0.0).then(|| Ema::warming_up(model.params(), o.ema));
    let mut rng = SplitMix64::new(o.seed ^ 0xd1ff);
    let t_max = cfg.timesteps;
    for step in 0..o.steps {
        let lr = tr.set_lr(step);
        let b = noised_batch(&mut rng, train, &s, cfg.null_class(), o.label_dropout, o.batch_size, &mut |r| {
            r.below(t_max) as isize
        })?;
        let v = (b.eps.broadcast_mul(&b.alpha)? - b.x0.broadcast_mul(&b.sigma)?)?;
        let loss = (model.forward(&b.x_t, &b.t, &b.class)? - v)?.sqr()?.mean_all()?;
        tr.apply(&loss)?;
        if let Some(avg) = average.as_mut() {
            avg.update(model.params())?;
        }
        tr.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    let (train_seconds, final_train_loss, loss_curve) = tr.finish("");
    if let Some(avg) = average {
        avg.store(model.params())?;
    }

    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    data.write_data(out)?;
    let onnx_vs_candle_max_abs = write_model(out, "teacher", &model, &s, None, o.seed, data)?;
    let mut energy_candle = Vec::new();
    for steps in [cfg.timesteps, 4] {
        let count = data.quality_samples();
        let smp = candle_samples(&model, &s, steps, Condition::Unconditional, count, cfg.max_batch, SAMPLE_SEED)?;
        energy_candle.push((steps, data.quality(&smp)?));
    }
    Ok(TeacherReport {
        options: o.clone(),
        params: model.params().count(),
        train_seconds,
        final_train_loss,
        loss_curve,
        energy_candle,
        energy_floor: data.floor()?,
        onnx_vs_candle_max_abs,
    })
}

/// Writes `<name>.onnx` (with `steps` as its supported step counts, if any), golden denoiser
/// inputs and candle's outputs (`golden/<name>.{x,t,class,v}.npy`, one batch at the timesteps
/// of its grid) and 8 calibration batches (`calib/<name>/`: the data's calibration rows noised
/// at the timesteps the file is sampled at, every class and the null class); returns tract vs
/// candle max-abs on the golden batch.
pub(crate) fn write_model(
    out: &Path,
    name: &str,
    m: &Denoiser,
    s: &Schedule,
    steps: Option<&[usize]>,
    seed: u64,
    data: &dyn DiffusionData,
) -> Result<f32> {
    let cfg = m.config();
    let d = cfg.dim;
    let onnx = out.join(format!("{name}.onnx"));
    std::fs::write(&onnx, m.export_family(data.family(), s, steps)?)?;
    let grid: Vec<isize> = match steps {
        Some(list) => list.iter().flat_map(|&n| s.grid(n)).collect(),
        None => (0..s.len() as isize).collect(),
    };
    let train = data.calibration_set();
    let mut rng = SplitMix64::new(seed ^ 0xca11b);
    let n = cfg.max_batch;
    // Every class and the null class, in turn.
    let classes: Vec<u32> = (0..n).map(|i| (i % (cfg.classes + 1)) as u32).collect();
    let batch = |rng: &mut SplitMix64| -> Result<NoisedBatch> {
        let mut b = noised_batch(rng, train, s, cfg.null_class(), 0.0, n, &mut |r| grid[r.below(grid.len())])?;
        b.class = Tensor::from_vec(classes.clone(), n, &Device::Cpu)?;
        Ok(b)
    };
    let arrays = |b: &NoisedBatch| -> Result<[Array; 3]> {
        let x = b.x_t.flatten_all()?.to_vec1::<f32>()?;
        let t: Vec<i64> = b.t.to_vec1::<u32>()?.iter().map(|&v| v as i64).collect();
        let c: Vec<i64> = b.class.to_vec1::<u32>()?.iter().map(|&v| v as i64).collect();
        Ok([Array::f32(vec![n, d], x), Array::i64(vec![n], t), Array::i64(vec![n], c)])
    };
    let cal = out.join("calib").join(name);
    let _ = std::fs::remove_dir_all(&cal);
    std::fs::create_dir_all(&cal)?;
    for i in 0..8 {
        let b = batch(&mut rng)?;
        for (a, input) in arrays(&b)?.iter().zip(["x", "t", "class"]) {
            a.write_npy(&cal.join(format!("s{i}.{input}.npy")))?;
        }
    }
    let b = batch(&mut rng)?;
    let golden = arrays(&b)?;
    let v = m.forward(&b.x_t, &b.t, &b.class)?.flatten_all()?.to_vec1::<f32>()?;
    std::fs::create_dir_all(out.join("golden"))?;
    for (a, input) in golden.iter().zip(["x", "t", "class"]) {
        a.write_npy(&out.join(format!("golden/{name}.{input}.npy")))?;
    }
    Array::f32(vec![n, d], v.clone()).write_npy(&out.join(format!("golden/{name}.v.npy")))?;
    let tract = crate::verify::tract_reference(&onnx, &golden)?;
    Ok(crate::family::max_abs(&tract[0].to_f32(), &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_run_learns_and_writes_artefacts() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_ddpm2d_{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let o = TrainOptions {
            config: DenoiserConfig { hidden: 32, blocks: 1, timesteps: 32, max_batch: 16, ..DenoiserConfig::default() },
            steps: 300,
            batch_size: 128,
            warmup: 20,
            train_points: 2048,
            test_points: 256,
            quiet: true,
            ..TrainOptions::default()
        };
        let r = train_teacher(&dir, &o)?;
        let first = r.loss_curve[0].1;
        assert!(r.final_train_loss < 0.9 * first, "does not learn: {first} → {}", r.final_train_loss);
        assert!(r.onnx_vs_candle_max_abs < 1e-4, "{}", r.onnx_vs_candle_max_abs);
        for f in ["teacher.onnx", "data/test.npy", "golden/teacher.v.npy", "calib/teacher/s7.class.npy"] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
