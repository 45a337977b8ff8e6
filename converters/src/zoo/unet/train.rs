//! Training the `ddpm` teacher on labelled glyphs and writing its artefacts.
//!
//! Each step draws glyphs `x₀ = 2·pixels − 1` with their class (replaced by the null class
//! with probability [`TrainOptions::label_dropout`], so one network learns the conditional and
//! the unconditional model for classifier-free guidance), a timestep t uniform in `0..T` and
//! noise ε, forms `x_t = α·x₀ + σ·ε` on the cosine schedule and regresses
//! `v = α·ε − σ·x₀` (mean squared error), as the 2-D family `ddpm2d` does. An exponential
//! moving average of the weights ([`TrainOptions::ema`]) is what gets exported.
//!
//! ```no_run
//! use mote_converters::zoo::unet::train::{train_teacher, TrainOptions};
//! let (model, report) = train_teacher(std::path::Path::new("models/ddpm"), &TrainOptions::default())?;
//! println!("{:.4} after {:.0} s", report.final_train_loss, report.train_seconds);
//! # let _ = model;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::evaluate::CandleFigures;
use super::sampling::{candle_samples, to_model, Method};
use super::{UNet, UNetConfig};
use crate::array::Array;
use crate::zoo::diffusion::sampler::{Condition, Schedule};
use crate::zoo::diffusion::train::{GOLDEN_GUIDANCE, GOLDEN_SEED};
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Ema, Trainer};
use crate::zoo::vae::glyphs::{glyphs, Glyphs};
use crate::zoo::vae::train::{TEST_SEED, TRAIN_SEED};
use crate::zoo::vae::{PIXELS, SIDE};

/// Images in the golden denoiser batch (`golden/teacher.{x,t,class,v}.npy`) and in the golden
/// sampler runs (`golden/teacher.sample.npy`, `.guided.npy`, 4 DDIM steps).
pub const GOLDEN: usize = 4;
/// Steps of the golden sampler runs.
pub const GOLDEN_STEPS: usize = 4;
/// Panels of `samples.png` after the held-out glyphs: `(DDIM steps, guidance scale)`.
pub const GRID_PANELS: [(usize, f32); 4] = [(64, 1.0), (4, 1.0), (64, 3.0), (4, 3.0)];
/// Calibration samples (`calib/teacher/s<i>.{x,t,class}.npy`, one image each).
pub const CALIBRATION: usize = 16;

/// Training budget, data and settings. [`TrainOptions::default`] is the zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Architecture.
    pub config: UNetConfig,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps (then cosine decay to 10% of `lr`).
    pub warmup: usize,
    /// AdamW weight decay on weight matrices.
    pub weight_decay: f64,
    /// Probability of training an image with the null class.
    pub label_dropout: f64,
    /// Decay of the exported exponential moving average of the weights (0: no average).
    pub ema: f64,
    /// Seed of the initialisation, batches and noise.
    pub seed: u64,
    /// Training glyphs (a fixed set, seed [`TRAIN_SEED`]).
    pub train_images: usize,
    /// Held-out glyphs (seed [`TEST_SEED`]): the energy-distance reference.
    pub test_images: usize,
    /// Sample sizes and step counts of the candle evaluation.
    pub eval: super::evaluate::EvalOptions,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            config: UNetConfig::default(),
            steps: 2400,
            batch_size: 64,
            lr: 3e-3,
            warmup: 100,
            weight_decay: 0.0,
            label_dropout: 0.15,
            ema: 0.995,
            seed: 42,
            train_images: 16384,
            test_images: 512,
            eval: super::evaluate::EvalOptions::default(),
            quiet: false,
        }
    }
}

impl TrainOptions {
    /// The training glyphs (pixels in [0, 1]).
    pub fn train_set(&self) -> Glyphs {
        glyphs(self.train_images, TRAIN_SEED)
    }

    /// The held-out glyphs (pixels in [0, 1]).
    pub fn test_set(&self) -> Glyphs {
        glyphs(self.test_images, TEST_SEED)
    }
}

/// What teacher training measured in candle (`train_report.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeacherReport {
    /// Training settings (with the architecture).
    pub options: TrainOptions,
    /// Trainable scalars.
    pub params: usize,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Mean wall time of one optimiser step.
    pub seconds_per_step: f64,
    /// CPU threads candle used (`RAYON_NUM_THREADS`; on two cores shared with other jobs one
    /// thread was faster than two).
    #[serde(default)]
    pub threads: usize,
    /// Smoothed v-loss at the end (of the raw weights, before averaging).
    pub final_train_loss: f64,
    /// `(step, smoothed loss)` every 5% of training.
    pub loss_curve: Vec<(usize, f64)>,
    /// tract vs candle on the golden denoiser batch, max-abs.
    pub onnx_vs_candle_max_abs: f32,
    /// Sample quality, guidance and baselines measured with candle.
    pub candle: CandleFigures,
    /// Labels of the panels of `samples.png`.
    pub grid_panels: Vec<String>,
    /// MACs of one denoiser call (one image) from the converter's report, filled in after
    /// conversion.
    #[serde(default)]
    pub macs_per_call: Option<u64>,
}

impl TeacherReport {
    /// Reads `train_report.json` from the family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A noised batch: the model's inputs and its v target.
pub struct NoisedBatch {
    /// `x_t [n, 1, 16, 16]`.
    pub x_t: Tensor,
    /// Timestep ids `[n]` (u32).
    pub t: Tensor,
    /// Class ids `[n]` (u32), the null class where dropped.
    pub class: Tensor,
    /// `v = α·ε − σ·x₀ [n, 1, 16, 16]`.
    pub v: Tensor,
}

/// `n` images of `data` (model space, `[count · 256]`, labels `labels`) noised at timesteps
/// drawn by `pick_t`, classes dropped to `null` with probability `drop`.
pub fn noised_batch(
    rng: &mut SplitMix64,
    (data, labels): (&[f32], &[u8]),
    s: &Schedule,
    (null, drop): (usize, f64),
    n: usize,
    pick_t: &mut dyn FnMut(&mut SplitMix64) -> isize,
) -> Result<NoisedBatch> {
    let dev = Device::Cpu;
    let eps = rng.normal_vec(n * PIXELS, 1.0);
    let (mut x_t, mut v) = (Vec::with_capacity(n * PIXELS), Vec::with_capacity(n * PIXELS));
    let (mut ts, mut cs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for k in 0..n {
        let i = rng.below(labels.len());
        let x0 = &data[i * PIXELS..(i + 1) * PIXELS];
        cs.push(if rng.chance(drop) { null } else { labels[i] as usize } as u32);
        let t = pick_t(rng);
        ts.push(t.max(0) as u32);
        let (a, sg) = s.alpha_sigma(t);
        for (&x, &e) in x0.iter().zip(&eps[k * PIXELS..(k + 1) * PIXELS]) {
            x_t.push((a * x as f64 + sg * e as f64) as f32);
            v.push((a * e as f64 - sg * x as f64) as f32);
        }
    }
    let shape = (n, 1, SIDE, SIDE);
    Ok(NoisedBatch {
        x_t: Tensor::from_vec(x_t, shape, &dev)?,
        t: Tensor::from_vec(ts, n, &dev)?,
        class: Tensor::from_vec(cs, n, &dev)?,
        v: Tensor::from_vec(v, shape, &dev)?,
    })
}

/// A trained model and its training curve.
pub struct Fitted {
    /// The model (with the averaged weights when [`TrainOptions::ema`] > 0).
    pub model: UNet,
    /// Wall time of the loop.
    pub seconds: f64,
    /// Smoothed loss at the end (raw weights).
    pub final_loss: f64,
    /// `(step, smoothed loss)` every 5% of training.
    pub curve: Vec<(usize, f64)>,
}

/// The training loop alone.
pub fn fit(o: &TrainOptions) -> Result<Fitted> {
    let cfg = o.config;
    let model = UNet::new(cfg, o.seed)?;
    let s = Schedule::cosine(cfg.timesteps);
    let train = o.train_set();
    let data = to_model(&train.images);
    let mut tr = Trainer::new(model.params(), "ddpm teacher", schedule_of!(o))?;
    let mut ema = (o.ema > 0.0).then(|| Ema::new(model.params(), o.ema));
    let mut rng = SplitMix64::new(o.seed ^ 0xd1ff);
    let t_max = cfg.timesteps;
    for step in 0..o.steps {
        let lr = tr.set_lr(step);
        let b = noised_batch(
            &mut rng,
            (&data, &train.labels),
            &s,
            (cfg.null_class(), o.label_dropout),
            o.batch_size,
            &mut |r| r.below(t_max) as isize,
        )?;
        let loss = (model.forward(&b.x_t, &b.t, &b.class)? - b.v)?.sqr()?.mean_all()?;
        tr.apply(&loss)?;
        if let Some(e) = ema.as_mut() {
            e.update(model.params())?;
        }
        tr.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
    }
    let (seconds, final_loss, curve) = tr.finish("");
    if let Some(e) = ema {
        e.store(model.params())?;
    }
    Ok(Fitted { model, seconds, final_loss, curve })
}

/// Trains the teacher, writes `teacher.onnx`, its golden and calibration files, and measures
/// it with candle ([`super::evaluate::candle_figures`]).
pub fn train_teacher(out: &Path, o: &TrainOptions) -> Result<(UNet, TeacherReport)> {
    let Fitted { model, seconds: train_seconds, final_loss: final_train_loss, curve: loss_curve } = fit(o)?;
    let s = Schedule::cosine(o.config.timesteps);
    for d in ["golden", "calib"] {
        let _ = std::fs::remove_dir_all(out.join(d));
        std::fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let onnx_vs_candle_max_abs = write_model(out, "teacher", &model, &s, None, o.seed)?;
    write_golden_samples(out, "teacher", &model, &s, GOLDEN_STEPS)?;
    let candle = super::evaluate::candle_figures(&model, o)?;
    let grid_panels = super::evaluate::write_grids(&out.join("samples.png"), &model, o, &GRID_PANELS)?;
    let report = TeacherReport {
        options: o.clone(),
        params: model.params().count(),
        train_seconds,
        seconds_per_step: train_seconds / o.steps.max(1) as f64,
        threads: candle_core::utils::get_num_threads(),
        final_train_loss,
        loss_curve,
        onnx_vs_candle_max_abs,
        candle,
        grid_panels,
        macs_per_call: None,
    };
    Ok((model, report))
}

fn write_arrays(dir: &Path, prefix: &str, b: &NoisedBatch) -> Result<[Array; 3]> {
    let n = b.t.dim(0)?;
    let x = b.x_t.flatten_all()?.to_vec1::<f32>()?;
    let ids = |t: &Tensor| -> Result<Array> {
        Ok(Array::i64(vec![n], t.to_vec1::<u32>()?.iter().map(|&v| v as i64).collect()))
    };
    let arrays = [Array::f32(vec![n, 1, SIDE, SIDE], x), ids(&b.t)?, ids(&b.class)?];
    for (a, input) in arrays.iter().zip(["x", "t", "class"]) {
        a.write_npy(&dir.join(format!("{prefix}.{input}.npy")))?;
    }
    Ok(arrays)
}

/// Writes `<name>.onnx` (with `steps` as its supported step counts, if any), the golden
/// denoiser batch and candle's output (`golden/<name>.{x,t,class,v}.npy`, [`GOLDEN`] images at
/// timesteps spread over the schedule) and [`CALIBRATION`] one-image calibration samples
/// (`calib/<name>/`: held-out-style glyphs noised at timesteps spread over the schedule, every
/// class and the null class in turn); returns tract vs candle max-abs on the golden batch.
pub fn write_model(out: &Path, name: &str, m: &UNet, s: &Schedule, steps: Option<&[usize]>, seed: u64) -> Result<f32> {
    let cfg = m.config();
    let onnx = out.join(format!("{name}.onnx"));
    std::fs::write(&onnx, m.export(s, steps)?)?;
    let grid: Vec<isize> = match steps {
        Some(list) => list.iter().flat_map(|&n| s.grid(n)).collect(),
        None => (0..s.len() as isize).collect(),
    };
    let data = glyphs(256, TRAIN_SEED ^ 0xca1);
    let pixels = to_model(&data.images);
    let mut rng = SplitMix64::new(seed ^ 0xca11b);
    let classes = cfg.classes + 1;
    let cal = out.join("calib").join(name);
    let _ = std::fs::remove_dir_all(&cal);
    std::fs::create_dir_all(&cal)?;
    std::fs::create_dir_all(out.join("golden"))?;
    for i in 0..CALIBRATION {
        let at = grid[(i * grid.len()) / CALIBRATION];
        let mut b = noised_batch(&mut rng, (&pixels, &data.labels), s, (cfg.null_class(), 0.0), 1, &mut |_| at)?;
        b.class = Tensor::from_vec(vec![(i % classes) as u32], 1, &Device::Cpu)?;
        write_arrays(&cal, &format!("s{i}"), &b)?;
    }
    let mut k = 0;
    let mut b = noised_batch(&mut rng, (&pixels, &data.labels), s, (cfg.null_class(), 0.0), GOLDEN, &mut |_| {
        k += 1;
        grid[((2 * k - 1) * grid.len()) / (2 * GOLDEN)]
    })?;
    b.class = Tensor::from_vec((0..GOLDEN).map(|i| ((2 * i + 1) % classes) as u32).collect(), GOLDEN, &Device::Cpu)?;
    let golden = write_arrays(&out.join("golden"), name, &b)?;
    let v = m.forward(&b.x_t, &b.t, &b.class)?.flatten_all()?.to_vec1::<f32>()?;
    Array::f32(vec![GOLDEN, 1, SIDE, SIDE], v.clone()).write_npy(&out.join(format!("golden/{name}.v.npy")))?;
    let tract = crate::verify::tract_reference(&onnx, &golden)?;
    Ok(crate::family::max_abs(&tract[0].to_f32(), &v))
}

/// Candle's `steps`-step DDIM samples ([`GOLDEN_STEPS`] for the teacher) of [`GOLDEN`] images from the runtime's noise for
/// seeds [`GOLDEN_SEED`]` + k`: unconditional (`golden/<name>.sample.npy`) and guided with
/// [`GOLDEN_GUIDANCE`] (`golden/<name>.guided.npy`), both `[GOLDEN, 1, 16, 16]` in model space.
pub fn write_golden_samples(dir: &Path, name: &str, m: &UNet, s: &Schedule, steps: usize) -> Result<()> {
    let (class, scale) = GOLDEN_GUIDANCE;
    for (cond, file) in [(Condition::Unconditional, "sample"), (Condition::Guided { class, scale }, "guided")] {
        let x = candle_samples(m, s, Method::Ddim, steps, cond, GOLDEN, GOLDEN_SEED)?;
        Array::f32(vec![GOLDEN, 1, SIDE, SIDE], x).write_npy(&dir.join(format!("golden/{name}.{file}.npy")))?;
    }
    Ok(())
}

/// What [`gradient_check`] measured.
#[derive(Clone, Debug)]
pub struct GradientCheck {
    /// Loss on the fixed batch before the step.
    pub loss_before: f32,
    /// Loss on the same batch after one optimiser step.
    pub loss_after: f32,
    /// Parameters whose gradient is missing or all zero (should be none).
    pub without_gradient: Vec<String>,
}

/// Gradient flow through the UNet built with `cfg`: the v-loss on a fixed batch of `batch`
/// noised glyphs, the parameters the backward pass reaches, and the loss after one AdamW step
/// of learning rate `lr`.
pub fn gradient_check(cfg: UNetConfig, batch: usize, lr: f64, seed: u64) -> Result<GradientCheck> {
    let m = UNet::new(cfg, seed)?;
    let s = Schedule::cosine(cfg.timesteps);
    let g = glyphs(batch, seed ^ 0x9a7);
    let data = to_model(&g.images);
    let mut rng = SplitMix64::new(seed);
    let b = noised_batch(&mut rng, (&data, &g.labels), &s, (cfg.null_class(), 0.2), batch, &mut |r| {
        r.below(cfg.timesteps) as isize
    })?;
    let loss = |m: &UNet| -> Result<Tensor> { Ok((m.forward(&b.x_t, &b.t, &b.class)? - &b.v)?.sqr()?.mean_all()?) };
    let l0 = loss(&m)?;
    let grads = l0.backward()?;
    let mut without_gradient = Vec::new();
    for p in m.params().all() {
        let norm = match grads.get(p.var.as_tensor()) {
            Some(g) => g.sqr()?.sum_all()?.to_scalar::<f32>()?,
            None => 0.0,
        };
        if norm == 0.0 || !norm.is_finite() {
            without_gradient.push(p.name.clone());
        }
    }
    let sched = crate::zoo::trainer::Schedule { steps: 1, warmup: 0, lr, weight_decay: 0.0, quiet: true };
    let mut tr = Trainer::new(m.params(), "gradient check", sched)?;
    tr.apply(&l0)?;
    Ok(GradientCheck {
        loss_before: l0.to_scalar::<f32>()?,
        loss_after: loss(&m)?.to_scalar::<f32>()?,
        without_gradient,
    })
}
