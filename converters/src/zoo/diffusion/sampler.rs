//! The host side of the sampler contract the runtime implements (`mote::diffusion`): the
//! schedule, the nested timestep grids, v-prediction → (x̂₀, ε̂), the deterministic DDIM step
//! and classifier-free guidance, in f64 on f32 data. Distillation targets, candle's golden
//! samples and the candle-side metrics all step with these functions, so they are the
//! runtime's steps exactly.
//!
//! ```
//! use mote_converters::zoo::diffusion::sampler::{ddim_step, Schedule};
//! let s = Schedule::cosine(128);
//! assert_eq!(s.grid(4), vec![127, 95, 63, 31]);
//! assert!(s.alpha_bar(127) < 1e-3 && s.alpha_bar(-1) == 1.0);
//! // One step to clean data returns x̂₀ = α·x − σ·v̂.
//! let (x, v) = ([0.5f32, -1.0], [0.25f32, 0.5]);
//! let y = ddim_step(&s, &x, &v, 0, -1);
//! let (a, sg) = (s.alpha_bar(0).sqrt(), (1.0 - s.alpha_bar(0)).sqrt());
//! assert!((y[0] as f64 - (a * 0.5 - sg * 0.25)).abs() < 1e-6);
//! ```

use anyhow::{ensure, Context, Result};

/// Smallest ᾱ of the schedule (the runtime needs ᾱ > 0; the cosine schedule reaches 0 at T).
pub const MIN_ALPHA_BAR: f64 = 1e-5;

/// A discrete noise schedule ᾱ_t, t = 0..T, stored as the f32 values the model file carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    alpha_bar: Vec<f32>,
    /// The explicit timestep grid (empty: uniform grids only).
    grid: Vec<isize>,
}

impl Schedule {
    /// The cosine schedule (Nichol & Dhariwal, s = 0.008) at u = (t+1)/T, t = 0..T, clipped
    /// below at [`MIN_ALPHA_BAR`]: ᾱ_{T−1} ≈ 0, so x_{T−1} is pure noise.
    pub fn cosine(timesteps: usize) -> Self {
        let s = 0.008;
        let f = |u: f64| ((u + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        let alpha_bar = (0..timesteps)
            .map(|t| (f((t + 1) as f64 / timesteps as f64) / f(0.0)).clamp(MIN_ALPHA_BAR, 1.0) as f32)
            .collect();
        Self { alpha_bar, grid: Vec::new() }
    }

    /// This schedule stepping on an explicit grid of timesteps (strictly decreasing, below T,
    /// at most [`mote::diffusion::MAX_GRID_STEPS`]): runs of `grid.len()` steps and of its
    /// halvings by powers of two visit it ([`Schedule::grid`]), as the runtime does with the
    /// grid in a model's [`mote::diffusion::GRID_KEY`] metadata.
    pub fn with_grid(mut self, grid: &[isize]) -> Result<Self> {
        let text = grid.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",");
        let bytes: Vec<u8> = self.alpha_bar.iter().flat_map(|a| a.to_le_bytes()).collect();
        let ok = mote::diffusion::Schedule::from_le_bytes(&bytes).and_then(|s| s.with_grid(&text)).is_ok();
        ensure!(
            ok,
            "a step grid needs 1 to {} strictly decreasing timesteps below {}, not {text}",
            mote::diffusion::MAX_GRID_STEPS,
            self.len()
        );
        self.grid = grid.to_vec();
        Ok(self)
    }

    /// The schedule of a model's metadata: ᾱ from [`mote::diffusion::SCHEDULE_KEY`] and the
    /// explicit grid of [`mote::diffusion::GRID_KEY`] when present.
    pub fn from_metadata(metadata: &[(String, String)]) -> Result<Self> {
        let value = |key: &str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let s = Self::parse(value(mote::diffusion::SCHEDULE_KEY).context("no diffusion schedule in the metadata")?)?;
        match value(mote::diffusion::GRID_KEY) {
            Some(text) => {
                let grid = text.split(',').map(|t| t.trim().parse::<isize>()).collect::<Result<Vec<_>, _>>()?;
                s.with_grid(&grid)
            }
            None => Ok(s),
        }
    }

    /// The explicit grid's metadata text ([`mote::diffusion::GRID_KEY`]), if it has one.
    pub fn grid_metadata(&self) -> Option<String> {
        (!self.grid.is_empty()).then(|| self.grid.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","))
    }

    /// Parses the metadata text (comma-separated ᾱ values in (0, 1]).
    pub fn parse(text: &str) -> Result<Self> {
        let alpha_bar: Vec<f32> = text.split(',').map(|v| v.trim().parse::<f32>()).collect::<Result<_, _>>()?;
        ensure!(!alpha_bar.is_empty() && alpha_bar.iter().all(|&a| a > 0.0 && a <= 1.0), "bad schedule");
        Ok(Self { alpha_bar, grid: Vec::new() })
    }

    /// The metadata text: ᾱ_t for t = 0..T−1, comma-separated (exactly the stored f32 values).
    pub fn metadata(&self) -> String {
        self.alpha_bar.iter().map(|a| format!("{a:e}")).collect::<Vec<_>>().join(",")
    }

    /// T.
    pub fn len(&self) -> usize {
        self.alpha_bar.len()
    }

    /// Whether the schedule has no timesteps.
    pub fn is_empty(&self) -> bool {
        self.alpha_bar.is_empty()
    }

    /// ᾱ_t in f64 (1 for t < 0: clean data; t past the end reads ᾱ_{T−1}).
    pub fn alpha_bar(&self, t: isize) -> f64 {
        match self.alpha_bar.get((t.max(0) as usize).min(self.len().saturating_sub(1))) {
            Some(&a) if t >= 0 => a as f64,
            _ => 1.0,
        }
    }

    /// (α, σ) = (√ᾱ_t, √(1−ᾱ_t)).
    pub fn alpha_sigma(&self, t: isize) -> (f64, f64) {
        let a = self.alpha_bar(t);
        (a.sqrt(), (1.0 - a).sqrt())
    }

    /// The timesteps of an `n`-step run: every (G/n)-th timestep of the explicit grid of G
    /// timesteps when G/n is a power of two ([`Schedule::with_grid`]), else uniform:
    /// t_i = T·(n−i)/n − 1 (integer division), i = 0..n. The grid of 2n steps contains the
    /// grid of n steps (every other element).
    pub fn grid(&self, n: usize) -> Vec<isize> {
        let g = self.grid.len();
        if n > 0 && g.is_multiple_of(n) && (g / n).is_power_of_two() {
            return self.grid.iter().step_by(g / n).copied().collect();
        }
        let t = self.len();
        (0..n).map(|i| (t * (n - i) / n.max(1)) as isize - 1).collect()
    }

    /// `(t, t_prev)` pairs of an `n`-step run, the last `t_prev` being −1 (clean data).
    pub fn steps(&self, n: usize) -> Vec<(isize, isize)> {
        let g = self.grid(n);
        (0..n).map(|i| (g[i], g.get(i + 1).copied().unwrap_or(-1))).collect()
    }
}

/// x̂₀ = α·x − σ·v̂ and ε̂ = σ·x + α·v̂ of a v-prediction at t.
pub fn x0_eps(s: &Schedule, x: f64, v: f64, t: isize) -> (f64, f64) {
    let (a, sg) = s.alpha_sigma(t);
    (a * x - sg * v, sg * x + a * v)
}

/// The deterministic DDIM step (η = 0) of every coordinate of `x` from t to `prev` given the
/// v-prediction `v`: `x ← α_prev·x̂₀ + σ_prev·ε̂`.
pub fn ddim_step(s: &Schedule, x: &[f32], v: &[f32], t: isize, prev: isize) -> Vec<f32> {
    let (ap, sp) = s.alpha_sigma(prev);
    x.iter()
        .zip(v)
        .map(|(&x, &v)| {
            let (x0, eps) = x0_eps(s, x as f64, v as f64, t);
            (ap * x0 + sp * eps) as f32
        })
        .collect()
}

/// What a sample is conditioned on (host side of `mote::diffusion::Condition`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// The null class.
    Unconditional,
    /// One class, no guidance.
    Class(usize),
    /// Classifier-free guidance: `u + scale·(c − u)` of the raw outputs.
    Guided {
        /// The class.
        class: usize,
        /// Guidance scale (0: unconditional, 1: conditional).
        scale: f32,
    },
}

/// Classifier-free guidance of raw outputs: `u + scale·(c − u)`.
pub fn guided(uncond: &[f32], cond: &[f32], scale: f32) -> Vec<f32> {
    uncond.iter().zip(cond).map(|(&u, &c)| u + scale * (c - u)).collect()
}

/// A denoiser as the sampler sees it: raw output for rows `x` (flattened `[n, D]`) at timestep
/// `t`, every row of class `class`.
pub type Predict<'a> = dyn FnMut(&[f32], isize, usize) -> Result<Vec<f32>> + 'a;

/// The prediction under `cond` (`null` = the unconditional class id): one call, or two
/// combined for guidance.
pub fn predict(f: &mut Predict<'_>, x: &[f32], t: isize, cond: Condition, null: usize) -> Result<Vec<f32>> {
    match cond {
        Condition::Unconditional => f(x, t, null),
        Condition::Class(c) => f(x, t, c),
        Condition::Guided { class, scale } => {
            let u = f(x, t, null)?;
            let c = f(x, t, class)?;
            Ok(guided(&u, &c, scale))
        }
    }
}

/// Runs `steps` deterministic DDIM steps from `x` (x_{T−1}, flattened rows) in place.
pub fn ddim_sample(
    f: &mut Predict<'_>,
    s: &Schedule,
    steps: usize,
    x: &mut [f32],
    cond: Condition,
    null: usize,
) -> Result<()> {
    for (t, prev) in s.steps(steps) {
        let v = predict(f, x, t, cond, null)?;
        let next = ddim_step(s, x, &v, t, prev);
        x.copy_from_slice(&next);
    }
    Ok(())
}

/// `n` standard-normal values from the runtime's generator ([`mote::rng::Rng`]) seeded with
/// `seed`: the x_{T−1} the runtime's sampler draws for `seed` when `x` has `n` values.
pub fn initial_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut r = mote::rng::Rng::new(seed);
    (0..n).map(|_| r.gaussian()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_nest_and_end_on_clean_data() {
        let s = Schedule::cosine(128);
        for n in [1, 2, 4, 8, 16, 32, 64] {
            let (coarse, fine) = (s.grid(n), s.grid(2 * n));
            assert_eq!(coarse, fine.iter().step_by(2).copied().collect::<Vec<_>>(), "{n}");
            assert_eq!(s.steps(n).last().map(|p| p.1), Some(-1));
        }
        assert_eq!(s.grid(128), (0..128).rev().collect::<Vec<isize>>());
        let back = Schedule::parse(&s.metadata()).unwrap();
        assert_eq!(back, s);
        assert!(s.alpha_bar(0) > 0.999 && s.alpha_bar(127) <= 1.1e-5);
        assert!((1..128).all(|t| s.alpha_bar(t) <= s.alpha_bar(t - 1)));
    }

    #[test]
    fn explicit_grids_halve_like_the_runtimes_and_travel_in_metadata() {
        let s = Schedule::cosine(128).with_grid(&[127, 111, 87, 47]).unwrap();
        let bytes: Vec<u8> = (0..128).flat_map(|t| (s.alpha_bar(t) as f32).to_le_bytes()).collect();
        let runtime = mote::diffusion::Schedule::from_le_bytes(&bytes).unwrap().with_grid("127,111,87,47").unwrap();
        for n in [1, 2, 3, 4, 8, 16] {
            let want: Vec<isize> = (0..n).map(|i| runtime.timestep(i, n)).collect();
            assert_eq!(s.grid(n), want, "{n} steps");
        }
        assert_eq!(s.grid(2), vec![127, 87]);
        let meta = vec![
            (mote::diffusion::SCHEDULE_KEY.to_string(), s.metadata()),
            (mote::diffusion::GRID_KEY.to_string(), s.grid_metadata().unwrap()),
        ];
        assert_eq!(Schedule::from_metadata(&meta).unwrap(), s);
        assert_eq!(Schedule::cosine(128).grid_metadata(), None);
        let err = Schedule::cosine(128).with_grid(&[127, 130]).unwrap_err().to_string();
        assert!(err.contains("strictly decreasing timesteps below 128"), "{err}");
    }

    #[test]
    fn ddim_with_the_true_v_recovers_the_data() {
        // A point mass at x₀: the exact v at (x_t, t) is (α·x_t − x₀)/σ for every noise draw.
        let s = Schedule::cosine(64);
        let x0 = [0.7f64, -1.2];
        let mut f = |x: &[f32], t: isize, _c: usize| -> Result<Vec<f32>> {
            let (a, sg) = s.alpha_sigma(t);
            Ok(x.iter().zip(x0.iter().cycle()).map(|(&x, &x0)| ((a * x as f64 - x0) / sg) as f32).collect())
        };
        for steps in [1, 3, 64] {
            let mut x = initial_noise(4, 9);
            ddim_sample(&mut f, &s, steps, &mut x, Condition::Unconditional, 2).unwrap();
            for (got, want) in x.iter().zip(x0.iter().cycle()) {
                assert!((*got as f64 - want).abs() < 1e-4, "{steps} steps: {got} vs {want}");
            }
        }
        assert_eq!(guided(&[1.0, 2.0], &[3.0, 2.0], 3.0), vec![7.0, 2.0]);
    }
}
