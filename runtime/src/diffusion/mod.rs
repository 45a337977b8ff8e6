//! Diffusion samplers: loops over a model's denoising entry (`denoise`, else `forward`) with
//! the noise schedule read from the model file and the sampler's working values kept in the
//! model's state region.
//!
//! The denoiser's inputs, by position: `x_t` (f32, any shape), the timestep index `t` (i32 or
//! f32, one value per batch row, all equal, at most [`MAX_TIME_VALUES`]) and, for
//! class-conditional models, `class` (i32, one per row). Its output has `x_t`'s shape and is,
//! per the metadata [`PREDICTION_KEY`], the noise ε̂ (`epsilon`, the default), the velocity
//! v̂ = √ᾱ·ε − √(1−ᾱ)·x₀ (`v`) or the clean sample x̂₀ (`sample`). Every step turns it into
//! both x̂₀ and ε̂.
//!
//! A run of N steps visits the timesteps of [`Schedule::timestep`] and ends on clean data
//! (ᾱ = 1). From t to the previous visited timestep, with β = 1 − ᾱ_t/ᾱ_prev:
//!
//! - [`Method::Ddpm`]: ancestral sampling from the posterior q(x_prev | x_t, x̂₀), mean
//!   `√ᾱ_prev·β/(1−ᾱ_t)·x̂₀ + √(1−β)·(1−ᾱ_prev)/(1−ᾱ_t)·x_t`, variance
//!   σ² = β·(1−ᾱ_prev)/(1−ᾱ_t);
//! - [`Method::Ddim`]: `x ← √ᾱ_prev·x̂₀ + √(1−ᾱ_prev−σ²)·ε̂ + σ·z`,
//!   σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√β (η = 0: deterministic; η = 1: DDPM's variance);
//! - [`Method::EulerMaruyama`]: the reverse VP-SDE with score s = −ε̂/√(1−ᾱ_t),
//!   `x ← x + β·(x/2 + s) + √β·z`;
//! - [`Method::ProbabilityFlow`]: the probability-flow ODE, integrated in x̃ = x/√ᾱ against the
//!   noise level σ = √((1−ᾱ)/ᾱ), where it reads dx̃/dσ = ε̂: Euler's method (which is DDIM
//!   with η = 0) or Heun's (the slope averaged with one at the Euler point: one more model
//!   call per step except the last).
//!
//! **Guidance.** A class-conditional model (a `class` input and the unconditional class id in
//! [`NULL_CLASS_KEY`]) samples one class ([`Condition::Class`]), unconditionally, or with
//! classifier-free guidance ([`Condition::Guided`]): each prediction is then
//! `u + scale·(c − u)` from a conditional (c) and an unconditional (u) call.
//!
//! **Memory.** The starting noise is drawn into the sampler's state slot ([`SAMPLER_SLOT`],
//! [`SAMPLER_STATE_VALUES`] values per value of `x`; the converter reserves it for any model
//! with a schedule) from the seeded portable [`Rng`], so host and device produce the same
//! sample. Nothing is allocated and nothing but the model's own arena and state is used.

mod schedule;
mod slot;

pub use schedule::{
    Schedule, StepCounts, GRID_KEY, MAX_GRID_STEPS, MAX_LISTED_STEPS, MAX_TIMESTEPS, SCHEDULE_KEY, SCHEDULE_TENSOR,
    STEPS_KEY,
};

use crate::error::{Error, Result};
use crate::format::EntryId;
use crate::rng::Rng;
use crate::session::Session;
use slot::{Buf, Slot};

/// Most values the timestep (and class) input may have (one per batch row, all equal).
pub const MAX_TIME_VALUES: usize = 64;

/// Metadata key of the output's parameterisation: `epsilon` (default), `v` or `sample`.
pub const PREDICTION_KEY: &str = "mote.diffusion.prediction";

/// Metadata key of the class id that means "no class" (the unconditional path).
pub const NULL_CLASS_KEY: &str = "mote.diffusion.null_class";

/// Name of the state slot holding the sampler's working values.
pub const SAMPLER_SLOT: &str = "diffusion.sampler";

/// f32 values the sampler slot holds per value of `x`: the sample, two predictions, the Heun
/// point and the unconditional prediction of guidance.
pub const SAMPLER_STATE_VALUES: usize = 5;

/// Smallest classifier-free guidance scale (0: unconditional).
pub const MIN_GUIDANCE: f32 = 0.0;

/// Largest classifier-free guidance scale.
pub const MAX_GUIDANCE: f32 = 20.0;

/// How each step moves from timestep t to the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// DDPM ancestral sampling.
    Ddpm,
    /// DDIM with stochasticity η (0 = deterministic).
    Ddim {
        /// η in [0, 1].
        eta: f32,
    },
    /// Euler–Maruyama on the reverse VP-SDE.
    EulerMaruyama,
    /// The probability-flow ODE: Euler, or Heun (second order).
    ProbabilityFlow {
        /// Heun's method instead of Euler's.
        heun: bool,
    },
}

/// What to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// Unconditionally (a class-conditional model gets its "no class" id).
    Unconditional,
    /// One class, without guidance.
    Class(i32),
    /// One class with classifier-free guidance: `u + scale·(c − u)`.
    Guided {
        /// The class.
        class: i32,
        /// Guidance scale in [`MIN_GUIDANCE`]..=[`MAX_GUIDANCE`] (1: plain conditional).
        scale: f32,
    },
}

/// One sampling run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// The update rule.
    pub method: Method,
    /// Number of steps (one of the model's [`StepCounts`]).
    pub steps: usize,
    /// Seed of the starting noise and of the stochastic methods' noise.
    pub seed: u64,
    /// Unconditional, one class, or guided.
    pub condition: Condition,
}

/// The output's parameterisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prediction {
    Epsilon,
    V,
    Sample,
}

impl Prediction {
    /// (x̂₀, ε̂) from x and the model output `out` at ᾱ.
    fn split(self, x: f32, out: f32, a: f32) -> (f32, f32) {
        let (ra, r1a) = (libm::sqrtf(a), libm::sqrtf(1.0 - a));
        match self {
            Prediction::Epsilon => ((x - r1a * out) / ra, out),
            Prediction::V => (ra * x - r1a * out, r1a * x + ra * out),
            Prediction::Sample => (out, (x - ra * out) / r1a),
        }
    }
}

/// The denoising entry and how to call it.
struct Denoiser {
    entry: EntryId,
    prediction: Prediction,
    /// `(class, unconditional class)` for class-conditional models.
    classes: Option<(i32, i32)>,
    guidance: Option<f32>,
    rows: usize,
    time_is_int: bool,
}

impl Denoiser {
    fn of(session: &Session<'_, '_>, condition: Condition) -> Result<Self> {
        let model = *session.model();
        let entry = model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))?;
        let prediction = match model.metadata(PREDICTION_KEY).unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v" => Prediction::V,
            "sample" => Prediction::Sample,
            _ => return Err(Error::BadParams),
        };
        let time = model.tensor(model.entry_input(entry, 1)?)?.desc;
        let rows = time.shape.numel();
        if rows > MAX_TIME_VALUES {
            return Err(Error::SizeMismatch);
        }
        let has_class = model.entry_input(entry, 2).is_ok();
        let null = model.metadata(NULL_CLASS_KEY).map(|v| v.trim().parse::<i32>().map_err(|_| Error::BadParams));
        let (class, guidance) = match condition {
            Condition::Unconditional => (None, None),
            Condition::Class(c) => (Some(c), None),
            Condition::Guided { class, scale } => {
                if !(MIN_GUIDANCE..=MAX_GUIDANCE).contains(&scale) {
                    return Err(Error::GuidanceOutOfRange);
                }
                (Some(class), Some(scale))
            }
        };
        let classes = match (has_class, null) {
            (false, _) if class.is_some() => return Err(Error::NoConditionalPath),
            (false, _) => None,
            (true, None) => return Err(Error::NoConditionalPath),
            (true, Some(null)) => {
                let null = null?;
                let class = class.unwrap_or(null);
                if !(0..=null).contains(&class) || null < 0 {
                    return Err(Error::IndexOutOfRange);
                }
                Some((class, null))
            }
        };
        Ok(Denoiser { entry, prediction, classes, guidance, rows, time_is_int: time.dtype == crate::DType::I32 })
    }

    /// One model call at (x in `from`, t) for `class`, output into `to`.
    fn call(&self, s: &mut Session<'_, '_>, slot: &Slot, from: Buf, t: isize, class: i32, to: Buf) -> Result<()> {
        let e = self.entry;
        s.input_from_state(e, 0, slot.offset(from))?;
        if self.time_is_int {
            s.set_input_i32(e, 1, &[t as i32; MAX_TIME_VALUES][..self.rows])?;
        } else {
            s.set_input_f32(e, 1, &[t as f32; MAX_TIME_VALUES][..self.rows])?;
        }
        if self.classes.is_some() {
            s.set_input_i32(e, 2, &[class; MAX_TIME_VALUES][..self.rows])?;
        }
        s.run(e)?;
        s.output_to_state(e, 0, slot.offset(to))
    }

    /// The (guided) prediction at (x in `from`, t) into `to`.
    fn predict(&self, s: &mut Session<'_, '_>, slot: &Slot, from: Buf, t: isize, to: Buf) -> Result<()> {
        let (class, null) = self.classes.unwrap_or((0, 0));
        self.call(s, slot, from, t, class, to)?;
        if let Some(scale) = self.guidance {
            self.call(s, slot, from, t, null, Buf::Unconditional)?;
            let state = s.state_mut();
            for i in 0..slot.n {
                let (c, u) = (slot.get(state, to, i), slot.get(state, Buf::Unconditional, i));
                slot.set(state, to, i, u + scale * (c - u));
            }
        }
        Ok(())
    }
}

/// Draws x_T ~ N(0, I) from the request's seed, runs its steps, and writes the sample to
/// `out` (the size of the denoiser's `x` input).
///
/// Errors: [`Error::NotADiffusionModel`] (no schedule or sampler slot),
/// [`Error::UnsupportedSteps`] (lists the supported counts), [`Error::GuidanceOutOfRange`],
/// [`Error::NoConditionalPath`] (a class asked of an unconditional model),
/// [`Error::IndexOutOfRange`] (a class id past the unconditional one), [`Error::BadParams`]
/// (η outside [0, 1]), [`Error::SizeMismatch`] (`out` not `x`'s size), and the model's own.
pub fn sample(session: &mut Session<'_, '_>, request: &Request, out: &mut [f32]) -> Result<()> {
    let model = *session.model();
    let schedule = Schedule::of_model(&model)?;
    schedule.check_steps(request.steps)?;
    if let Method::Ddim { eta } = request.method {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::BadParams);
        }
    }
    let d = Denoiser::of(session, request.condition)?;
    let slot = Slot::of_model(&model, d.entry)?;
    if out.len() != slot.n {
        return Err(Error::SizeMismatch);
    }
    let (n, steps, method) = (slot.n, request.steps, request.method);
    let mut rng = Rng::new(request.seed);
    {
        let state = session.state_mut();
        for i in 0..n {
            slot.set(state, Buf::X, i, rng.gaussian());
        }
    }
    for i in 0..steps {
        let (t, prev) = (schedule.timestep(i, steps), schedule.timestep(i + 1, steps));
        let (a, a_prev) = (schedule.alpha_bar(t), schedule.alpha_bar(prev));
        let beta = 1.0 - a / a_prev;
        let last = prev < 0;
        d.predict(session, &slot, Buf::X, t, Buf::Pred)?;
        let state = session.state_mut();
        let mut noise = |on: bool| if on && !last { rng.gaussian() } else { 0.0 };
        match method {
            Method::Ddpm => {
                let sigma = libm::sqrtf(beta * (1.0 - a_prev) / (1.0 - a));
                let c0 = libm::sqrtf(a_prev) * beta / (1.0 - a);
                let cx = libm::sqrtf(1.0 - beta) * (1.0 - a_prev) / (1.0 - a);
                slot.update(state, |x, p| {
                    let (x0, _) = d.prediction.split(x, p, a);
                    c0 * x0 + cx * x + sigma * noise(true)
                });
            }
            Method::Ddim { eta } => {
                let sigma = eta * libm::sqrtf((1.0 - a_prev) / (1.0 - a)) * libm::sqrtf(beta);
                let dir = libm::sqrtf((1.0 - a_prev - sigma * sigma).max(0.0));
                slot.update(state, |x, p| {
                    let (x0, eps) = d.prediction.split(x, p, a);
                    libm::sqrtf(a_prev) * x0 + dir * eps + sigma * noise(sigma > 0.0)
                });
            }
            Method::EulerMaruyama => {
                let (sq1a, root_beta) = (libm::sqrtf(1.0 - a), libm::sqrtf(beta));
                slot.update(state, |x, p| {
                    let (_, eps) = d.prediction.split(x, p, a);
                    x + beta * (0.5 * x - eps / sq1a) + root_beta * noise(true)
                });
            }
            Method::ProbabilityFlow { heun } => {
                // In x̃ = x/√ᾱ and σ = √((1−ᾱ)/ᾱ) the ODE is dx̃/dσ = ε̂: Euler's step is DDIM's
                // (η = 0); Heun's averages the slope with one at the Euler point.
                let (sigma, sigma_prev) = (noise_level(a), noise_level(a_prev));
                let (ra, ra_prev) = (libm::sqrtf(a), libm::sqrtf(a_prev));
                let euler = |x: f32, eps: f32| (x / ra + (sigma_prev - sigma) * eps) * ra_prev;
                for k in 0..n {
                    let (x, p) = (slot.get(state, Buf::X, k), slot.get(state, Buf::Pred, k));
                    slot.set(state, Buf::Heun, k, euler(x, d.prediction.split(x, p, a).1));
                }
                if heun && !last {
                    d.predict(session, &slot, Buf::Heun, prev, Buf::HeunPred)?;
                    let state = session.state_mut();
                    for k in 0..n {
                        let (x, p) = (slot.get(state, Buf::X, k), slot.get(state, Buf::Pred, k));
                        let (h, q) = (slot.get(state, Buf::Heun, k), slot.get(state, Buf::HeunPred, k));
                        let slope = 0.5 * (d.prediction.split(x, p, a).1 + d.prediction.split(h, q, a_prev).1);
                        slot.set(state, Buf::X, k, euler(x, slope));
                    }
                } else {
                    slot.copy(state, Buf::Heun, Buf::X);
                }
            }
        }
    }
    let state = session.state_mut();
    for (i, o) in out.iter_mut().enumerate() {
        *o = slot.get(state, Buf::X, i);
    }
    Ok(())
}

/// σ = √((1−ᾱ)/ᾱ): the noise level of x/√ᾱ.
fn noise_level(alpha_bar: f32) -> f32 {
    libm::sqrtf((1.0 - alpha_bar) / alpha_bar)
}
