//! The optimisation scaffolding the zoo's trainers (GPT, Switch, Transformer-XL, BERT/ALBERT,
//! T5) share: two AdamW optimisers (weight decay on weight matrices only), the warm-up + cosine
//! learning-rate schedule, the progress bar and the smoothed loss curve. Each family keeps
//! its own batches and loss.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

use super::layers::Params;
use super::rng::SplitMix64;

/// `(step, smoothed train loss)` points.
pub(crate) type Curve = Vec<(usize, f64)>;

/// Learning rate at `step`: linear warm-up over `warmup` steps, then cosine decay to 10% of
/// `lr` at `steps`.
pub(crate) fn lr_at(step: usize, steps: usize, warmup: usize, lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// `n` windows of `win` ids at random offsets of `train`.
pub(crate) fn random_windows<'a>(rng: &mut SplitMix64, train: &'a [u32], win: usize, n: usize) -> Vec<&'a [u32]> {
    (0..n)
        .map(|_| {
            let o = rng.below(train.len() - win);
            &train[o..o + win]
        })
        .collect()
}

/// An exponential moving average of a parameter store's weights, `a ← d·a + (1 − d)·p` after
/// every optimiser step; [`Ema::store`] writes the average back into the store.
pub(crate) struct Ema {
    decay: f64,
    warm_up: bool,
    updates: usize,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// An average starting at the current weights of `p`, with decay `decay` from the first
    /// update on.
    pub(crate) fn new(p: &Params, decay: f64) -> Self {
        Self { decay, warm_up: false, updates: 0, shadow: p.all().iter().map(|p| p.var.as_tensor().detach()).collect() }
    }

    /// An average whose decay warms up as `min(decay, (1 + k)/(10 + k))` at update k (as
    /// TensorFlow's `ExponentialMovingAverage` does), for weights that start at random.
    pub(crate) fn warming_up(p: &Params, decay: f64) -> Self {
        Self { warm_up: true, ..Self::new(p, decay) }
    }

    /// Folds the current weights of `p` (the store the average was made from) into it.
    pub(crate) fn update(&mut self, p: &Params) -> Result<()> {
        let k = self.updates as f64;
        let d = if self.warm_up { self.decay.min((1.0 + k) / (10.0 + k)) } else { self.decay };
        for (s, p) in self.shadow.iter_mut().zip(p.all()) {
            *s = ((&*s * d)? + (p.var.as_tensor().detach() * (1.0 - d))?)?;
        }
        self.updates += 1;
        Ok(())
    }

    /// Writes the average into `p`.
    pub(crate) fn store(&self, p: &Params) -> Result<()> {
        for (s, p) in self.shadow.iter().zip(p.all()) {
            p.var.set(s)?;
        }
        Ok(())
    }
}

/// Budget and optimiser settings of a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// Optimiser steps.
    pub steps: usize,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay on the decayed parameters.
    pub weight_decay: f64,
    /// No progress bar.
    pub quiet: bool,
}

/// The [`Schedule`] of a family's options struct `$o` (any struct with the fields `steps`,
/// `warmup`, `lr`, `weight_decay` and `quiet`).
macro_rules! schedule_of {
    ($o:expr) => {
        $crate::zoo::trainer::Schedule {
            steps: $o.steps,
            warmup: $o.warmup,
            lr: $o.lr,
            weight_decay: $o.weight_decay,
            quiet: $o.quiet,
        }
    };
}
pub(crate) use schedule_of;

/// One training run in progress: call [`Trainer::set_lr`], [`Trainer::apply`] and
/// [`Trainer::record`] every step, then [`Trainer::finish`].
pub(crate) struct Trainer {
    sched: Schedule,
    opt_decay: AdamW,
    opt_plain: AdamW,
    pb: ProgressBar,
    ema: f64,
    smoothing: (f64, f64),
    curve: Curve,
    every: usize,
    start: Instant,
}

impl Trainer {
    /// AdamW (β 0.9/0.99) over `params`, a progress bar labelled `label`.
    pub fn new(params: &Params, label: &str, sched: Schedule) -> Result<Self> {
        let adam = |vars, wd| {
            AdamW::new(vars, ParamsAdamW { lr: sched.lr, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: wd })
        };
        let opt_decay = adam(params.vars(true), sched.weight_decay)?;
        let opt_plain = adam(params.vars(false), 0.0)?;
        let pb = if sched.quiet { ProgressBar::hidden() } else { ProgressBar::new(sched.steps as u64) };
        pb.set_style(ProgressStyle::with_template(&format!(
            "{label} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))?);
        let every = (sched.steps / 20).max(1);
        Ok(Self {
            sched,
            opt_decay,
            opt_plain,
            pb,
            ema: f64::NAN,
            smoothing: (0.98, 0.02),
            curve: Vec::new(),
            every,
            start: Instant::now(),
        })
    }

    /// Smooths the loss as `keep * previous + take * new` instead of the default
    /// `0.98 * previous + 0.02 * new` (both weights given, so the arithmetic stays exact).
    pub fn with_smoothing(mut self, keep: f64, take: f64) -> Self {
        self.smoothing = (keep, take);
        self
    }

    /// Sets the scheduled learning rate of `step`; returns it.
    pub fn set_lr(&mut self, step: usize) -> f64 {
        let lr = lr_at(step, self.sched.steps, self.sched.warmup, self.sched.lr);
        self.opt_decay.set_learning_rate(lr);
        self.opt_plain.set_learning_rate(lr);
        lr
    }

    /// Back-propagates `loss` and steps both optimisers.
    pub fn apply(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.opt_decay.step(&grads)?;
        self.opt_plain.step(&grads)?;
        Ok(())
    }

    /// Ends `step`: folds its train loss `l` into the smoothed loss and the curve (a point
    /// every 5% of training and at the end) and advances the progress bar, showing the
    /// smoothed loss, `extra` and the learning rate `lr`.
    pub fn record(&mut self, step: usize, l: f64, lr: f64, extra: &str) {
        let (keep, take) = self.smoothing;
        self.ema = if self.ema.is_nan() { l } else { keep * self.ema + take * l };
        if (step + 1).is_multiple_of(self.every) || step + 1 == self.sched.steps {
            self.curve.push((step + 1, self.ema));
        }
        self.pb.set_message(format!("loss {:.3}{extra} lr {lr:.2e}", self.ema));
        self.pb.inc(1);
    }

    /// Ends the run (the bar shows the smoothed loss, `extra` and the wall time); returns
    /// (wall seconds, final smoothed loss, curve).
    pub fn finish(self, extra: &str) -> (f64, f64, Curve) {
        let secs = self.start.elapsed().as_secs_f64();
        self.pb.finish_with_message(format!("loss {:.3}{extra} in {secs:.0}s", self.ema));
        (secs, self.ema, self.curve)
    }
}
