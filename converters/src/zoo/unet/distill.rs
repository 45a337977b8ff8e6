//! Progressive distillation of the `ddpm` UNet (`mote zoo distill ddpm --to 4`): each round a
//! student initialised from its teacher learns to take two of the teacher's DDIM steps in one,
//! with the target of [`mod@crate::zoo::diffusion::distill`] (shared with `ddpm2d` and `ldm`
//! through [`RowDenoiser`]), on the training glyphs and with label dropout so guidance keeps
//! working. Each round keeps an exponential moving average of the student's weights
//! ([`DistillOptions::ema`]) and scores student and teacher at the student's step count by the
//! energy distance in local features of candle samples to the held-out glyphs.
//!
//! ```no_run
//! use mote_converters::zoo::unet::distill::{distill, ddpm_distill_options};
//! let r = distill(std::path::Path::new("models/ddpm"), &ddpm_distill_options(4))?;
//! println!("{} rounds", r.rounds.len());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::sampling::{candle_samples, to_model, to_pixels, Method};
use super::train::{write_golden_samples, write_model, TeacherReport};
use super::UNet;
use crate::zoo::diffusion::distill::{distillation_target, Round, RowDenoiser, EXPORTED};
use crate::zoo::diffusion::sampler::{Condition, Schedule};
use crate::zoo::diffusion::train::SAMPLE_SEED;
use crate::zoo::diffusion::{DistillOptions, DistillReport};
use crate::zoo::rng::SplitMix64;
use crate::zoo::trainer::{schedule_of, Ema, Trainer};
use crate::zoo::vae::train::energies;
use crate::zoo::vae::PIXELS;

impl RowDenoiser for UNet {
    fn v_rows(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_rows(x, t, class)
    }
}

/// The zoo budget: 64 teacher steps down to `to`, 400 batches of 64 glyphs per round.
pub fn ddpm_distill_options(to: usize) -> DistillOptions {
    DistillOptions {
        from_steps: 64,
        to,
        steps: 400,
        batch_size: 64,
        lr: 5e-4,
        warmup: 20,
        ema: 0.99,
        ..DistillOptions::default()
    }
}

/// Distils `dir/teacher.onnx` (configured and evaluated as `train_report.json` says) from
/// [`DistillOptions::from_steps`] down to [`DistillOptions::to`] steps, writing the students of
/// [`EXPORTED`] it reaches (`student<N>.onnx`, golden and calibration files) and
/// `distill_report.json`.
pub fn distill(dir: &Path, o: &DistillOptions) -> Result<DistillReport> {
    let tr = TeacherReport::read(dir)?;
    let cfg = tr.options.config;
    if !o.from_steps.is_power_of_two() || !o.to.is_power_of_two() || o.to >= o.from_steps {
        bail!("distillation goes from a power of two of steps to a smaller one (from {} to {})", o.from_steps, o.to);
    }
    if o.from_steps > cfg.timesteps {
        bail!("the teacher has {} timesteps, fewer than {} steps", cfg.timesteps, o.from_steps);
    }
    let s = Schedule::cosine(cfg.timesteps);
    let mut teacher = UNet::load_onnx(cfg, &dir.join("teacher.onnx"))?;
    let train = tr.options.train_set();
    let data = to_model(&train.images);
    let test = tr.options.test_set();
    let eval = &tr.options.eval;
    let test_n = &test.images[..eval.samples.min(test.len()) * PIXELS];
    let quality = |m: &UNet, steps: usize| -> Result<f64> {
        let smp = candle_samples(m, &s, Method::Ddim, steps, Condition::Unconditional, eval.samples, SAMPLE_SEED)?;
        Ok(energies(&to_pixels(&smp), test_n)[1])
    };
    let mut rng = SplitMix64::new(o.seed ^ 0xd157);
    let mut rounds = Vec::new();
    let mut n = o.from_steps / 2;
    while n >= o.to {
        let student = teacher.duplicate()?;
        let student_steps = s.steps(n);
        let mut t = Trainer::new(student.params(), &format!("distill {} → {n}", 2 * n), schedule_of!(o))?;
        let mut ema = (o.ema > 0.0).then(|| Ema::new(student.params(), o.ema));
        for step in 0..o.steps {
            let lr = t.set_lr(step);
            let mut rows = Vec::with_capacity(o.batch_size);
            let b = super::train::noised_batch(
                &mut rng,
                (&data, &train.labels),
                &s,
                (cfg.null_class(), o.label_dropout),
                o.batch_size,
                &mut |r| {
                    let i = r.below(n);
                    rows.push(i);
                    student_steps[i].0
                },
            )?;
            let x_t = b.x_t.reshape((o.batch_size, PIXELS))?;
            let target = distillation_target(&teacher, &s, n, &rows, &x_t, &b.class)?;
            let loss = (student.forward_rows(&x_t, &b.t, &b.class)? - target)?.sqr()?.mean_all()?;
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
        let onnx_vs_candle_max_abs = if EXPORTED.contains(&n) {
            let name = format!("student{n}");
            let worst = write_model(dir, &name, &student, &s, Some(&[n]), o.seed)?;
            write_golden_samples(dir, &name, &student, &s, n)?;
            Some(worst)
        } else {
            None
        };
        let round = Round {
            steps: n,
            train_seconds,
            loss_first_last,
            energy_candle: quality(&student, n)?,
            energy_teacher_candle: quality(&teacher, n)?,
            onnx_vs_candle_max_abs,
        };
        eprintln!(
            "{n} steps: loss {:.4} → {:.4} in {:.0} s; energy (local) student {:.4}, teacher {:.4}",
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
