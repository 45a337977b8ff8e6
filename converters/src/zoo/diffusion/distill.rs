//! Progressive distillation (Salimans & Ho, 2022): each round halves the step count. A student
//! initialised from its teacher (the previous round's student; first the trained teacher at
//! [`DistillOptions::from_steps`]) learns to match two deterministic DDIM steps of the teacher
//! with one of its own.
//!
//! For a student step t → t'' (consecutive timesteps of the N-step grid; t' is the midpoint on
//! the 2N-step grid, which contains the N-step grid) and `z_t = α_t·x₀ + σ_t·ε`, the teacher
//! takes the two DDIM steps `z_t → z_t' → z_t''` (with [`super::sampler`]'s v-prediction step).
//! One student DDIM step from `z_t` with prediction x̃ lands on
//! `α_t''·x̃ + σ_t''·(z_t − α_t·x̃)/σ_t`; setting that equal to `z_t''` gives the target
//!
//! `x̃ = (z_t'' − (σ_t''/σ_t)·z_t) / (α_t'' − (σ_t''/σ_t)·α_t)`
//!
//! (for the last step, t'' = −1: x̃ = z_t''). On an explicit grid ([`DistillOptions::grid`])
//! a student step holds every teacher step inside it, one or more, and z_t'' is where the
//! teacher's DDIM steps along them land ([`teacher_paths`]). The student is a v-predictor like
//! its teacher, so it regresses `ṽ = (α_t·z_t − x̃)/σ_t` (squared error in v weights the x̃
//! error by 1 + SNR, one of the paper's well-behaved weightings). Label dropout continues in distillation, so
//! each student keeps both the conditional and the unconditional model and guidance still
//! works on it at sampling time.
//!
//! ```no_run
//! use mote_converters::zoo::diffusion::{distill, DistillOptions};
//! let r = distill(std::path::Path::new("models/ddpm2d"), &DistillOptions { to: 4, ..DistillOptions::default() })?;
//! println!("{} rounds", r.rounds.len());
//! # Ok::<(), anyhow::Error>(())
//! ```

mod target;

pub use target::{distillation_target, teacher_paths, RowDenoiser};

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::data::{DiffusionData, Moons};
use super::sampler::{initial_noise, Condition, Schedule};
use super::train::{
    candle_predict, candle_samples, noised_batch, write_model, TeacherReport, GOLDEN_GUIDANCE, GOLDEN_SEED, SAMPLE_SEED,
};
use super::{Denoiser, DenoiserConfig};
use crate::array::Array;
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Ema, Trainer};

/// The students written to the family folder (`student<N>.onnx`) when a run reaches them.
pub const EXPORTED: [usize; 3] = [4, 2, 1];

/// The 8-step grid (of T = 128 timesteps) the zoo's `ldm` and `ddpm` students step on from 8
/// steps down (every other one of it, 127, 111, 79, 39, for 4 steps): it spends the steps at
/// high noise. Measured 4-step students, energy distance in local features:
///
/// - `ldm` (uniform 127, 95, 63, 31: 0.1942): this grid 0.1800; 127, 119, 111, 95, 87, 63, 47,
///   23: 0.1833. One round from the 16-step student straight to 4-step grids: 127, 111, 79, 39:
///   0.1835; 127, 111, 87, 47: 0.1852; 127, 103, 71, 39: 0.1858; 127, 111, 87, 55: 0.1873;
///   127, 103, 79, 47: 0.1896; 127, 111, 95, 63: 0.1929; 127, 119, 95, 55: 0.2066; 127, 119,
///   103, 71: 0.2078. Steps moved to low noise were far worse (one round straight from the
///   128-step teacher: 127, 79, 39, 15: 0.2575; 127, 63, 31, 11: 0.3755).
/// - `ddpm` (uniform: 0.0722): this grid 0.0711; 127, 111, 87, 47 in one round from the 16-step
///   student 0.0727.
pub const HIGH_NOISE_GRID: [isize; 8] = [127, 119, 111, 95, 79, 63, 39, 15];

/// Settings of a distillation run. [`DistillOptions::default`] is the zoo budget.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillOptions {
    /// Step count of the first teacher (the trained model sampled with DDIM); a power of two.
    pub from_steps: usize,
    /// Step count of the last student (a power of two ≤ `from_steps / 2`).
    pub to: usize,
    /// Optimiser steps per round (`steps`, for the shared trainer), unless `round_steps` says
    /// otherwise.
    pub steps: usize,
    /// Per-round budgets that replace `steps`: (student step count, optimiser steps). Absent
    /// from reports written before it existed.
    #[serde(default)]
    pub round_steps: Vec<(usize, usize)>,
    /// Points per optimiser step.
    pub batch_size: usize,
    /// Peak learning rate of each round.
    pub lr: f64,
    /// Warm-up steps of each round.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Probability of distilling a point with the null class.
    pub label_dropout: f64,
    /// Decay of the exponential moving average of the student's weights that each round keeps
    /// (0: the last weights; absent from reports written before it existed).
    #[serde(default)]
    pub ema: f64,
    /// Start from the `N`-step student that an earlier run kept (`rounds/student<N>.onnx`,
    /// [`checkpoint`]) instead of the teacher: the first round trains the N/2-step student, and
    /// the report keeps the earlier run's rounds down to N.
    #[serde(default)]
    pub resume_from: Option<usize>,
    /// An explicit step grid of G timesteps (G a power of two; strictly decreasing, each on the
    /// 2G-step grid): the G-step student steps on it and the students below it on its halvings
    /// (every other timestep); a run that stops above G steps never reaches it. The round that trains the G-step
    /// student learns every teacher step inside each student step. Empty: uniform grids.
    /// Absent from reports written before it existed.
    #[serde(default)]
    pub grid: Vec<isize>,
    /// Seed of the batches and noise.
    pub seed: u64,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            from_steps: 128,
            to: 1,
            steps: 1500,
            round_steps: Vec::new(),
            batch_size: 512,
            lr: 5e-4,
            warmup: 50,
            weight_decay: 0.0,
            label_dropout: 0.15,
            ema: 0.0,
            resume_from: None,
            grid: Vec::new(),
            seed: 7,
            quiet: false,
        }
    }
}

impl DistillOptions {
    /// Optimiser steps of the round that trains the `n`-step student.
    pub fn steps_for(&self, n: usize) -> usize {
        self.round_steps.iter().find(|r| r.0 == n).map_or(self.steps, |r| r.1)
    }

    /// The ONNX file the first round's teacher loads from in `dir`: `teacher.onnx`, or the kept
    /// student of [`DistillOptions::resume_from`] (an error names a missing one).
    pub fn first_teacher(&self, dir: &Path) -> Result<std::path::PathBuf> {
        let Some(n) = self.resume_point()? else {
            return Ok(dir.join("teacher.onnx"));
        };
        let p = checkpoint(dir, n);
        if !p.exists() {
            bail!("no kept {n}-step student {}: run the rounds down to {n} steps first", p.display());
        }
        Ok(p)
    }

    /// The schedule `base` the students step on: with [`DistillOptions::grid`] when it has one.
    pub fn schedule(&self, base: Schedule) -> Result<Schedule> {
        match self.grid.is_empty() {
            true => Ok(base),
            false => base.with_grid(&self.grid),
        }
    }

    /// The student step count of the first round (half its teacher's), with
    /// [`DistillOptions::grid`] checked.
    fn first_student(&self) -> Result<usize> {
        let g = self.grid.len();
        if g > 0 && !g.is_power_of_two() {
            bail!("a step grid needs a power of two of timesteps, not {g}");
        }
        Ok(self.resume_point()?.unwrap_or(self.from_steps) / 2)
    }

    /// [`DistillOptions::resume_from`], checked: a power of two of steps between the last
    /// student's and the first teacher's.
    fn resume_point(&self) -> Result<Option<usize>> {
        match self.resume_from {
            Some(r) if !(r.is_power_of_two() && r > self.to && r < self.from_steps) => bail!(
                "resuming needs a kept student between {} and {} steps (a power of two), not {r}",
                self.to,
                self.from_steps
            ),
            r => Ok(r),
        }
    }

    /// The same budget, `steps`, for every round.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self.round_steps.clear();
        self
    }
}

/// Where every round keeps its student (`dir/rounds/student<N>.onnx`, not committed), for
/// [`DistillOptions::resume_from`].
pub fn checkpoint(dir: &Path, steps: usize) -> std::path::PathBuf {
    dir.join("rounds").join(format!("student{steps}.onnx"))
}

/// One round: the student's step count, its training and its candle sample quality.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Round {
    /// Student steps (half the teacher's).
    pub steps: usize,
    /// The student's timesteps (absent from reports written before grids: uniform).
    #[serde(default)]
    pub timesteps: Vec<isize>,
    /// Wall time.
    pub train_seconds: f64,
    /// Smoothed distillation loss at the start and at the end.
    pub loss_first_last: (f64, f64),
    /// The data's sample-quality measure ([`DiffusionData::quality`]; `ddpm2d`: energy distance
    /// to the test set) of the student's candle samples at its step count (unconditional, the
    /// evaluation's seeds).
    pub energy_candle: f64,
    /// The same for the teacher at the student's step count (undistilled).
    pub energy_teacher_candle: f64,
    /// tract vs candle on the golden denoiser inputs, max-abs (exported students only).
    pub onnx_vs_candle_max_abs: Option<f32>,
}

/// What a distillation run did (`distill_report.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistillReport {
    /// Settings.
    pub options: DistillOptions,
    /// Every round, first to last.
    pub rounds: Vec<Round>,
}

impl DistillReport {
    /// Reads `distill_report.json` from the family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("distill_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The round that produced the `steps`-step student.
    pub fn round(&self, steps: usize) -> Option<&Round> {
        self.rounds.iter().find(|r| r.steps == steps)
    }
}

/// A batch of noised training rows `(x_t [n, D], t [n], class [n])` (ids u32), row k at the
/// timestep the second argument returns for it.
pub type BatchFn<'a> =
    dyn FnMut(&mut SplitMix64, &mut dyn FnMut(&mut SplitMix64) -> isize) -> Result<(Tensor, Tensor, Tensor)> + 'a;

/// What a family plugs into [`distill_with`].
pub struct Hooks<'a, M> {
    /// Draws the training batches (label dropout included).
    pub batch: &'a mut BatchFn<'a>,
    /// The family's sample quality of a model sampled with `steps` DDIM steps (lower is better).
    pub quality: &'a dyn Fn(&M, usize) -> Result<f64>,
    /// Writes the `steps`-step student `student<steps>` (ONNX, golden and calibration files);
    /// returns tract vs candle max-abs on its golden batch.
    pub export: &'a dyn Fn(&M, usize) -> Result<f32>,
}

/// Distils the `ddpm2d` teacher of `dir` (`teacher.onnx`, configured by `train_report.json`,
/// on its two moons) with [`distill_on`].
pub fn distill(dir: &Path, o: &DistillOptions) -> Result<DistillReport> {
    let tr = TeacherReport::read(dir)?;
    distill_on(dir, o, tr.options.config, &Moons::new(&tr.options))
}

/// Distils the teacher of `dir` (`teacher.onnx` of architecture `cfg`, trained on `data`) from
/// [`DistillOptions::from_steps`] down to [`DistillOptions::to`] steps, writing the students of
/// [`EXPORTED`] it reaches (ONNX, golden, calibration) and `distill_report.json`.
pub fn distill_on(
    dir: &Path,
    o: &DistillOptions,
    cfg: DenoiserConfig,
    data: &dyn DiffusionData,
) -> Result<DistillReport> {
    if data.dim() != cfg.dim {
        bail!("{}-dimensional data for a denoiser of dimension {}", data.dim(), cfg.dim);
    }
    let s = o.schedule(Schedule::cosine(cfg.timesteps))?;
    let teacher = Denoiser::load_onnx(cfg, &o.first_teacher(dir)?)?;
    let train = data.train_set();
    let mut batch = |rng: &mut SplitMix64, pick_t: &mut dyn FnMut(&mut SplitMix64) -> isize| {
        let b = noised_batch(rng, train, &s, cfg.null_class(), o.label_dropout, o.batch_size, pick_t)?;
        Ok((b.x_t, b.t, b.class))
    };
    let quality = |m: &Denoiser, steps: usize| -> Result<f64> {
        let count = data.quality_samples();
        data.quality(&candle_samples(m, &s, steps, Condition::Unconditional, count, cfg.max_batch, SAMPLE_SEED)?)
    };
    let export = |m: &Denoiser, steps: usize| -> Result<f32> {
        let worst = write_model(dir, &format!("student{steps}"), m, &s, Some(&[steps]), o.seed, data)?;
        write_golden_samples(dir, &format!("student{steps}"), m, &s, steps)?;
        Ok(worst)
    };
    distill_with(dir, teacher, &s, o, Hooks { batch: &mut batch, quality: &quality, export: &export })
}

/// Progressive distillation of `teacher` (on schedule `s`) from [`DistillOptions::from_steps`]
/// down to [`DistillOptions::to`] steps: each round trains a copy of its teacher on the
/// [`distillation_target`] (keeping a weight average when [`DistillOptions::ema`] > 0), scores
/// student and teacher at the student's steps, exports the students of [`EXPORTED`] and hands
/// over, keeping every student for [`DistillOptions::resume_from`] ([`checkpoint`]). Writes
/// `dir/distill_report.json`.
pub fn distill_with<M: RowDenoiser>(
    dir: &Path,
    mut teacher: M,
    s: &Schedule,
    o: &DistillOptions,
    hooks: Hooks<'_, M>,
) -> Result<DistillReport> {
    if !o.from_steps.is_power_of_two() || !o.to.is_power_of_two() || o.to >= o.from_steps {
        bail!("distillation goes from a power of two of steps to a smaller one (from {} to {})", o.from_steps, o.to);
    }
    if o.from_steps > s.len() {
        bail!("the teacher has {} timesteps, fewer than {} steps", s.len(), o.from_steps);
    }
    let mut n = o.first_student()?;
    let mut rounds = match o.resume_point()? {
        None => Vec::new(),
        Some(r) => {
            let earlier = DistillReport::read(dir).map(|d| d.rounds).unwrap_or_default();
            earlier.into_iter().filter(|round| round.steps >= r).collect()
        }
    };
    std::fs::create_dir_all(dir.join("rounds"))?;
    let mut rng = SplitMix64::new(o.seed ^ 0xd157 ^ o.resume_from.unwrap_or(0) as u64);
    while n >= o.to {
        let student = teacher.duplicate()?;
        let student_steps = s.steps(n);
        let paths = teacher_paths(s, 2 * n, n)?;
        let budget = o.steps_for(n);
        let mut schedule = schedule_of!(o);
        schedule.steps = budget;
        let mut t = Trainer::new(student.params(), &format!("distill {} → {n}", 2 * n), schedule)?;
        let mut ema = (o.ema > 0.0).then(|| Ema::new(student.params(), o.ema));
        for step in 0..budget {
            let lr = t.set_lr(step);
            let mut rows = Vec::with_capacity(o.batch_size);
            let (x_t, ts, class) = (hooks.batch)(&mut rng, &mut |r| {
                let i = r.below(n);
                rows.push(i);
                student_steps[i].0
            })?;
            let v_target = distillation_target(&teacher, s, &paths, &rows, &x_t, &class)?;
            let loss = (student.v_rows(&x_t, &ts, &class)? - v_target)?.sqr()?.mean_all()?;
            t.apply(&loss)?;
            if let Some(e) = ema.as_mut() {
                e.update(student.params())?;
            }
            t.record(step, loss.to_scalar::<f32>()? as f64, lr, "");
        }
        let (train_seconds, _, curve) = t.finish("");
        if let Some(e) = ema {
            e.store(student.params())?;
        }
        let loss_first_last = (curve.first().map_or(f64::NAN, |c| c.1), curve.last().map_or(f64::NAN, |c| c.1));
        std::fs::write(checkpoint(dir, n), student.onnx(s)?)?;
        let onnx_vs_candle_max_abs = if EXPORTED.contains(&n) { Some((hooks.export)(&student, n)?) } else { None };
        let round = Round {
            steps: n,
            timesteps: s.grid(n),
            train_seconds,
            loss_first_last,
            energy_candle: (hooks.quality)(&student, n)?,
            energy_teacher_candle: (hooks.quality)(&teacher, n)?,
            onnx_vs_candle_max_abs,
        };
        eprintln!(
            "{n} steps: loss {:.4} → {:.4} in {:.0} s; sample quality student {:.5}, teacher {:.5}",
            loss_first_last.0, loss_first_last.1, train_seconds, round.energy_candle, round.energy_teacher_candle
        );
        rounds.push(round);
        teacher = student;
        if n == 1 {
            break;
        }
        n /= 2;
    }
    let report = DistillReport { options: o.clone(), rounds };
    std::fs::write(dir.join("distill_report.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Candle's `steps`-step DDIM samples of one batch from the runtime's noise for
/// [`GOLDEN_SEED`]: unconditional (`golden/<name>.sample.npy`) and guided with
/// [`GOLDEN_GUIDANCE`] (`golden/<name>.guided.npy`), both `[n, D]`.
pub fn write_golden_samples(dir: &Path, name: &str, m: &Denoiser, s: &Schedule, steps: usize) -> Result<()> {
    let (n, d) = (m.config().max_batch, m.config().dim);
    let (class, scale) = GOLDEN_GUIDANCE;
    for (cond, file) in [(Condition::Unconditional, "sample"), (Condition::Guided { class, scale }, "guided")] {
        let mut x = initial_noise(d * n, GOLDEN_SEED);
        super::sampler::ddim_sample(
            &mut |x, t, c| candle_predict(m, x, t, c),
            s,
            steps,
            &mut x,
            cond,
            m.config().null_class(),
        )?;
        Array::f32(vec![n, d], x).write_npy(&dir.join(format!("golden/{name}.{file}.npy")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::diffusion::{train_teacher, DenoiserConfig, TrainOptions};

    #[test]
    fn a_short_distillation_beats_the_teacher_at_few_steps() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("mote_zoo_ddpm2d_distill_{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let o = TrainOptions {
            config: DenoiserConfig { hidden: 32, blocks: 1, timesteps: 32, max_batch: 16, ..DenoiserConfig::default() },
            steps: 600,
            batch_size: 256,
            warmup: 20,
            lr: 3e-3,
            train_points: 2048,
            test_points: 512,
            quiet: true,
            ..TrainOptions::default()
        };
        let r = train_teacher(&dir, &o)?;
        std::fs::write(dir.join("train_report.json"), serde_json::to_string(&r)?)?;
        let short = DistillOptions {
            from_steps: 8,
            to: 2,
            steps: 300,
            batch_size: 256,
            quiet: true,
            ..DistillOptions::default()
        };
        let d = distill(&dir, &short)?;
        assert_eq!(d.rounds.iter().map(|r| r.steps).collect::<Vec<_>>(), [4, 2]);
        for r in &d.rounds {
            assert!(r.loss_first_last.1 < r.loss_first_last.0, "round {}: {:?}", r.steps, r.loss_first_last);
            assert!(
                r.energy_candle < 0.7 * r.energy_teacher_candle,
                "round {}: {} vs {}",
                r.steps,
                r.energy_candle,
                r.energy_teacher_candle
            );
        }
        for f in [
            "student4.onnx",
            "student2.onnx",
            "golden/student4.sample.npy",
            "calib/student2/s0.t.npy",
            "distill_report.json",
        ] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        assert!(!dir.join("student1.onnx").exists());
        assert!(distill(&dir, &DistillOptions { from_steps: 8, to: 3, ..DistillOptions::default() }).is_err());

        // Every round kept its student; a run resumed from the 4-step one redoes the last round
        // only and keeps the first in its report.
        assert!(checkpoint(&dir, 4).exists() && checkpoint(&dir, 2).exists());
        let resumed = DistillOptions { steps: 50, resume_from: Some(4), ..short.clone() };
        let r = distill(&dir, &resumed)?;
        assert_eq!(r.rounds.iter().map(|r| r.steps).collect::<Vec<_>>(), [4, 2]);
        assert!((r.rounds[0].energy_candle - d.rounds[0].energy_candle).abs() < 1e-12, "{:?}", r.rounds[0]);
        assert_ne!(r.rounds[1].loss_first_last, d.rounds[1].loss_first_last);
        for bad in [2, 3, 8] {
            let e = distill(&dir, &DistillOptions { resume_from: Some(bad), ..short.clone() }).unwrap_err();
            assert!(e.to_string().contains("resuming needs a kept student"), "{bad}: {e}");
        }
        std::fs::remove_file(checkpoint(&dir, 4))?;
        let e = distill(&dir, &resumed).unwrap_err().to_string();
        assert!(e.contains("no kept 4-step student"), "{e}");

        // An explicit 4-step grid on the 8-step teacher's (31, 27, …, 3), then its halving; the
        // files carry the grid the runtime steps on.
        let gridded = DistillOptions { grid: vec![31, 27, 19, 7], ..short.clone() };
        let g = distill(&dir, &gridded)?;
        let shape: Vec<_> = g.rounds.iter().map(|r| (r.steps, r.timesteps.clone())).collect();
        assert_eq!(shape, [(4, vec![31, 27, 19, 7]), (2, vec![31, 19])]);
        for r in &g.rounds {
            assert!(r.energy_candle < r.energy_teacher_candle, "round {}: {r:?}", r.steps);
        }
        let meta = crate::import::OnnxModel::load(&dir.join("student2.onnx"))?.metadata();
        assert!(meta.contains(&(mote::diffusion::GRID_KEY.to_string(), "31,27,19,7".to_string())), "{meta:?}");
        // Resuming below the grid halves it further.
        let below = distill(&dir, &DistillOptions { steps: 50, resume_from: Some(4), ..gridded.clone() })?;
        let shape: Vec<_> = below.rounds.iter().map(|r| (r.steps, r.timesteps.clone())).collect();
        assert_eq!(shape, [(4, vec![31, 27, 19, 7]), (2, vec![31, 19])]);
        for (grid, why) in
            [(vec![31, 26, 19, 7], "is not part of the 8-step teacher's"), (vec![31, 19, 7], "power of two")]
        {
            let e = distill(&dir, &DistillOptions { grid, ..short.clone() }).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
