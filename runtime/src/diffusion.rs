//! Diffusion samplers: loops over a model's noise-prediction entry (`denoise`, else
//! `forward`: inputs `x_t [.., D]` f32 and the timestep index `t` i32, output `ε̂` of `x_t`'s
//! shape), with the noise schedule read from the model file.
//!
//! The schedule is the metadata `mote.diffusion.alpha_bar`: ᾱ_t for t = 0..T as
//! comma-separated decimals (ᾱ decreasing from near 1). A run visits `steps` timesteps spread
//! evenly from T−1 down to 0 and ends on clean data (ᾱ = 1 after t = 0). With ε̂ the
//! prediction at (x, t), x̂₀ = (x − √(1−ᾱ_t)·ε̂)/√ᾱ_t and the stride's β = 1 − ᾱ_t/ᾱ_prev:
//!
//! - [`Method::Ddpm`]: ancestral sampling, `x ← (x − β/√(1−ᾱ_t)·ε̂)/√(1−β) + σ·z` with the
//!   posterior variance σ² = β·(1−ᾱ_prev)/(1−ᾱ_t);
//! - [`Method::Ddim`]: `x ← √ᾱ_prev·x̂₀ + √(1−ᾱ_prev−σ²)·ε̂ + σ·z`,
//!   σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√β (η = 0: deterministic; η = 1: DDPM's variance);
//! - [`Method::EulerMaruyama`]: the reverse VP-SDE with score s = −ε̂/√(1−ᾱ_t),
//!   `x ← x + β·(x/2 + s) + √β·z`;
//! - [`Method::ProbabilityFlow`]: the probability-flow ODE, integrated in x̃ = x/√ᾱ against the
//!   noise level σ = √((1−ᾱ)/ᾱ), where it reads dx̃/dσ = ε̂: Euler's method (which is DDIM
//!   with η = 0) or Heun's (the slope averaged with one at the Euler point: one more model
//!   call per step except the last).
//!
//! Allocation-free: the caller lends `x` (the starting noise is drawn into it from the seeded
//! portable [`Rng`], so host and device produce the same sample) and a scratch buffer of
//! [`scratch_len`] values.

use crate::error::{Error, Result};
use crate::format::EntryId;
use crate::rng::Rng;
use crate::session::Session;

/// Most timesteps a schedule may hold.
pub const MAX_TIMESTEPS: usize = 1000;

/// Most values the timestep input may have (one per batch row, all equal).
pub const MAX_TIME_VALUES: usize = 64;

/// Metadata key of the schedule.
pub const SCHEDULE_KEY: &str = "mote.diffusion.alpha_bar";

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

/// The noise schedule ᾱ_t of a model.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    alpha_bar: [f32; MAX_TIMESTEPS],
    len: usize,
}

impl Schedule {
    /// Parses the comma-separated ᾱ values (at most [`MAX_TIMESTEPS`], each in (0, 1]).
    pub fn parse(text: &str) -> Result<Self> {
        let mut s = Schedule { alpha_bar: [0.0; MAX_TIMESTEPS], len: 0 };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let v: f32 = part.parse().map_err(|_| Error::BadParams)?;
            if s.len == MAX_TIMESTEPS || !(v > 0.0 && v <= 1.0) {
                return Err(Error::BadParams);
            }
            s.alpha_bar[s.len] = v;
            s.len += 1;
        }
        if s.len == 0 {
            return Err(Error::BadParams);
        }
        Ok(s)
    }

    /// The schedule a model carries in its metadata ([`Error::NotFound`] without one).
    pub fn of_model(model: &crate::Model<'_>) -> Result<Self> {
        Self::parse(model.metadata(SCHEDULE_KEY).ok_or(Error::NotFound)?)
    }

    /// Number of timesteps T.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the schedule is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// ᾱ_t (1 for t < 0: clean data).
    pub fn alpha_bar(&self, t: isize) -> f32 {
        if t < 0 {
            1.0
        } else {
            self.alpha_bar[(t as usize).min(self.len - 1)]
        }
    }

    /// The `i`-th of `steps` timesteps, from T−1 (i = 0) down to 0 (i = steps − 1).
    pub fn timestep(&self, i: usize, steps: usize) -> isize {
        if steps <= 1 {
            return self.len as isize - 1;
        }
        ((self.len - 1) * (steps - 1 - i) / (steps - 1)) as isize
    }
}

/// Scratch values a run needs for `n` values of `x`.
pub fn scratch_len(n: usize) -> usize {
    3 * n
}

/// σ = √((1−ᾱ)/ᾱ): the noise level of x/√ᾱ.
fn noise_level(alpha_bar: f32) -> f32 {
    libm::sqrtf((1.0 - alpha_bar) / alpha_bar)
}

/// The noise-prediction entry: `denoise`, else `forward`.
fn denoiser(session: &Session<'_, '_>) -> Result<EntryId> {
    let model = session.model();
    model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))
}

/// ε̂ at (x, t) into `eps`.
fn predict(session: &mut Session<'_, '_>, e: EntryId, x: &[f32], t: isize, eps: &mut [f32]) -> Result<()> {
    session.set_input_f32(e, 0, x)?;
    let model = *session.model();
    let desc = model.tensor(model.entry_input(e, 1)?)?.desc;
    let n = desc.shape.numel();
    if n > MAX_TIME_VALUES {
        return Err(Error::SizeMismatch);
    }
    if desc.dtype == crate::DType::I32 {
        session.set_input_i32(e, 1, &[t as i32; MAX_TIME_VALUES][..n])?;
    } else {
        session.set_input_f32(e, 1, &[t as f32; MAX_TIME_VALUES][..n])?;
    }
    session.run(e)?;
    session.output_f32(e, 0, eps)
}

/// Draws x_T ~ N(0, I) into `x` from `seed`, then runs `steps` steps of `method`; `x` ends as
/// the sample. Errors: [`Error::BadParams`] for 0 steps, more steps than timesteps or η outside
/// [0, 1]; [`Error::SizeMismatch`] for a `scratch` shorter than [`scratch_len`]; the model's own
/// errors (no `denoise`/`forward` entry, `x` not its input's size).
pub fn sample(
    session: &mut Session<'_, '_>,
    schedule: &Schedule,
    method: Method,
    steps: usize,
    seed: u64,
    x: &mut [f32],
    scratch: &mut [f32],
) -> Result<()> {
    if steps == 0 || steps > schedule.len() {
        return Err(Error::BadParams);
    }
    if let Method::Ddim { eta } = method {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::BadParams);
        }
    }
    let n = x.len();
    let scratch = scratch.get_mut(..scratch_len(n)).ok_or(Error::SizeMismatch)?;
    let (eps, rest) = scratch.split_at_mut(n);
    let (tmp, eps2) = rest.split_at_mut(n);
    let e = denoiser(session)?;
    let mut rng = Rng::new(seed);
    x.iter_mut().for_each(|v| *v = rng.gaussian());
    for i in 0..steps {
        let t = schedule.timestep(i, steps);
        let prev = if i + 1 < steps { schedule.timestep(i + 1, steps) } else { -1 };
        let (a, a_prev) = (schedule.alpha_bar(t), schedule.alpha_bar(prev));
        let beta = 1.0 - a / a_prev;
        predict(session, e, x, t, eps)?;
        let sq1a = libm::sqrtf(1.0 - a);
        match method {
            Method::Ddpm => {
                let sigma = libm::sqrtf(beta * (1.0 - a_prev) / (1.0 - a));
                let scale = 1.0 / libm::sqrtf(1.0 - beta);
                for (v, &g) in x.iter_mut().zip(eps.iter()) {
                    let z = if prev >= 0 { rng.gaussian() } else { 0.0 };
                    *v = (*v - beta / sq1a * g) * scale + sigma * z;
                }
            }
            Method::Ddim { eta } => {
                let sigma = eta * libm::sqrtf((1.0 - a_prev) / (1.0 - a)) * libm::sqrtf(beta);
                let dir = libm::sqrtf((1.0 - a_prev - sigma * sigma).max(0.0));
                for (v, &g) in x.iter_mut().zip(eps.iter()) {
                    let x0 = (*v - sq1a * g) / libm::sqrtf(a);
                    let z = if prev >= 0 && sigma > 0.0 { rng.gaussian() } else { 0.0 };
                    *v = libm::sqrtf(a_prev) * x0 + dir * g + sigma * z;
                }
            }
            Method::EulerMaruyama => {
                let noise = libm::sqrtf(beta);
                for (v, &g) in x.iter_mut().zip(eps.iter()) {
                    let z = if prev >= 0 { rng.gaussian() } else { 0.0 };
                    *v += beta * (0.5 * *v - g / sq1a) + noise * z;
                }
            }
            Method::ProbabilityFlow { heun } => {
                // In x̃ = x/√ᾱ and σ = √((1−ᾱ)/ᾱ) the ODE is dx̃/dσ = ε̂: Euler's step is DDIM's
                // (η = 0); Heun's averages the slope with one at the Euler point.
                let (sigma, sigma_prev) = (noise_level(a), noise_level(a_prev));
                let (ra, ra_prev) = (libm::sqrtf(a), libm::sqrtf(a_prev));
                for ((p, &v), &g) in tmp.iter_mut().zip(x.iter()).zip(eps.iter()) {
                    *p = (v / ra + (sigma_prev - sigma) * g) * ra_prev;
                }
                if heun && prev >= 0 {
                    predict(session, e, tmp, prev, eps2)?;
                    for ((v, &g), &g2) in x.iter_mut().zip(eps.iter()).zip(eps2.iter()) {
                        *v = (*v / ra + (sigma_prev - sigma) * 0.5 * (g + g2)) * ra_prev;
                    }
                } else {
                    x.copy_from_slice(tmp);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_spread_their_steps() {
        let s = Schedule::parse("0.99, 0.9,0.5,0.1").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s.alpha_bar(0), s.alpha_bar(3), s.alpha_bar(-1)), (0.99, 0.1, 1.0));
        let visited: [isize; 4] = core::array::from_fn(|i| s.timestep(i, 4));
        assert_eq!(visited, [3, 2, 1, 0]);
        assert_eq!([s.timestep(0, 2), s.timestep(1, 2)], [3, 0]);
        assert_eq!(s.timestep(0, 1), 3);
        for bad in ["", "0.5,x", "0.5,1.5", "0.5,0"] {
            assert_eq!(Schedule::parse(bad).err(), Some(Error::BadParams), "{bad:?}");
        }
    }
}
