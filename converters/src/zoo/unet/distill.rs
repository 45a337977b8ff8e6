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

use anyhow::Result;
use candle_core::Tensor;

use super::sampling::{candle_samples, to_model, to_pixels, Method};
use super::train::{noised_batch, write_golden_samples, write_model, TeacherReport};
use super::UNet;
use crate::zoo::diffusion::distill::{distill_with, Hooks, RowDenoiser, HIGH_NOISE_GRID};
use crate::zoo::diffusion::sampler::{Condition, Schedule};
use crate::zoo::diffusion::train::SAMPLE_SEED;
use crate::zoo::diffusion::{DistillOptions, DistillReport};
use crate::zoo::layers::Params;
use crate::zoo::rng::SplitMix64;
use crate::zoo::vae::train::energies;
use crate::zoo::vae::PIXELS;

impl RowDenoiser for UNet {
    fn v_rows(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_rows(x, t, class)
    }

    fn duplicate(&self) -> Result<Self> {
        UNet::duplicate(self)
    }

    fn params(&self) -> &Params {
        UNet::params(self)
    }

    fn onnx(&self, s: &Schedule) -> Result<Vec<u8>> {
        self.export(s, None)
    }
}

/// The zoo budget: 64 teacher steps down to `to`, batches of 64 glyphs, 800 per round but 400
/// for the 32- and 16-step students and 1600 for the 4-step one, where the gap to the teacher
/// opens. Against 800 batches in every round (4800 in all, as here) this took the 4-step student
/// from 0.0744 to 0.0722 (120% → 116% of the 64-step teacher) while the 32- and 16-step students
/// stayed within 0.5% of theirs. Half of the batches train the unconditional model, which the
/// quality metric samples; with the 8-step student at 0.0666 either way, this made no
/// measurable difference. Measured without gain for the 4-step student: 3200 batches in its
/// round (0.0709), and 1600 batches of four 16-step-student steps at once instead of the 8-step
/// round (0.0725). From 8 steps down the students step on [`HIGH_NOISE_GRID`], which took the
/// 4-step student from 0.0722 to 0.0711 (114%).
pub fn ddpm_distill_options(to: usize) -> DistillOptions {
    DistillOptions {
        from_steps: 64,
        to,
        steps: 800,
        round_steps: vec![(32, 400), (16, 400), (4, 1600)],
        label_dropout: 0.5,
        batch_size: 64,
        lr: 5e-4,
        warmup: 20,
        ema: 0.99,
        grid: HIGH_NOISE_GRID.to_vec(),
        ..DistillOptions::default()
    }
}

/// Distils `dir/teacher.onnx` (configured and evaluated as `train_report.json` says) from
/// [`DistillOptions::from_steps`] down to [`DistillOptions::to`] steps, writing the students of
/// [`EXPORTED`](crate::zoo::diffusion::distill::EXPORTED) it reaches (`student<N>.onnx`, golden
/// and calibration files) and `distill_report.json`.
pub fn distill(dir: &Path, o: &DistillOptions) -> Result<DistillReport> {
    let tr = TeacherReport::read(dir)?;
    let cfg = tr.options.config;
    let s = o.schedule(Schedule::cosine(cfg.timesteps))?;
    let teacher = UNet::load_onnx(cfg, &o.first_teacher(dir)?)?;
    let train = tr.options.train_set();
    let data = to_model(&train.images);
    let test = tr.options.test_set();
    let samples = tr.options.eval.samples;
    let test_n = &test.images[..samples.min(test.len()) * PIXELS];
    let mut batch = |rng: &mut SplitMix64, pick_t: &mut dyn FnMut(&mut SplitMix64) -> isize| {
        let drop = (cfg.null_class(), o.label_dropout);
        let b = noised_batch(rng, (&data, &train.labels), &s, drop, o.batch_size, pick_t)?;
        Ok((b.x_t.reshape((o.batch_size, PIXELS))?, b.t, b.class))
    };
    let quality = |m: &UNet, steps: usize| -> Result<f64> {
        let smp = candle_samples(m, &s, Method::Ddim, steps, Condition::Unconditional, samples, SAMPLE_SEED)?;
        Ok(energies(&to_pixels(&smp), test_n)[1])
    };
    let export = |m: &UNet, steps: usize| -> Result<f32> {
        let name = format!("student{steps}");
        let worst = write_model(dir, &name, m, &s, Some(&[steps]), o.seed)?;
        write_golden_samples(dir, &name, m, &s, steps)?;
        Ok(worst)
    };
    distill_with(dir, teacher, &s, o, Hooks { batch: &mut batch, quality: &quality, export: &export })
}
