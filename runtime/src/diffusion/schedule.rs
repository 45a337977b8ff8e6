//! The noise schedule a diffusion model carries in its metadata, its timestep grid, and the
//! step counts a (distilled) model supports.

use core::fmt;

use crate::error::{Error, Result};
use crate::Model;

/// Most timesteps a schedule may hold.
pub const MAX_TIMESTEPS: usize = 1000;

/// ONNX metadata key of the schedule: ᾱ_t for t = 0..T as comma-separated decimals. The
/// converter stores it in the `.mote` file as the f32 weight tensor [`SCHEDULE_TENSOR`].
pub const SCHEDULE_KEY: &str = "mote.diffusion.alpha_bar";

/// Name of the weight tensor holding ᾱ_t (f32 `[T]`).
pub const SCHEDULE_TENSOR: &str = "diffusion.alpha_bar";

/// Metadata key of the step counts a distilled model was trained for (comma-separated; absent:
/// any count from 1 to T).
pub const STEPS_KEY: &str = "mote.diffusion.steps";

/// Most step counts [`STEPS_KEY`] may list.
pub const MAX_LISTED_STEPS: usize = 8;

/// Metadata key of an explicit timestep grid (comma-separated timesteps, strictly decreasing,
/// each below T; absent: the uniform grid of [`Schedule::timestep`]). A run of as many steps as
/// the grid holds visits its timesteps; a run of half as many visits every other one, and so
/// on down by powers of two, so the grids of a distillation chain nest as uniform ones do.
pub const GRID_KEY: &str = "mote.diffusion.grid";

/// Most timesteps a [`GRID_KEY`] grid may hold.
pub const MAX_GRID_STEPS: usize = 32;

/// The step counts a model samples with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StepCounts {
    /// Any count from 1 to this many (the schedule's length).
    UpTo(u16),
    /// Only these counts (the first `len` entries).
    Listed {
        /// The counts, in the metadata's order.
        counts: [u16; MAX_LISTED_STEPS],
        /// How many are used.
        len: u8,
    },
}

impl StepCounts {
    /// Whether `steps` is supported.
    pub fn contains(&self, steps: usize) -> bool {
        match *self {
            StepCounts::UpTo(max) => (1..=max as usize).contains(&steps),
            StepCounts::Listed { counts, len } => counts[..len as usize].iter().any(|&c| c as usize == steps),
        }
    }

    /// Parses the [`STEPS_KEY`] list (each count in 1..=`max`).
    fn parse(text: &str, max: usize) -> Result<Self> {
        let mut counts = [0u16; MAX_LISTED_STEPS];
        let mut len = 0;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let c: u16 = part.parse().map_err(|_| Error::BadParams)?;
            if len == MAX_LISTED_STEPS || c == 0 || c as usize > max {
                return Err(Error::BadParams);
            }
            counts[len] = c;
            len += 1;
        }
        if len == 0 {
            return Err(Error::BadParams);
        }
        Ok(StepCounts::Listed { counts, len: len as u8 })
    }
}

impl fmt::Display for StepCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StepCounts::UpTo(max) => write!(f, "1 to {max}"),
            StepCounts::Listed { counts, len } => {
                let counts = &counts[..len as usize];
                for (i, c) in counts.iter().enumerate() {
                    let sep = match i {
                        0 => "",
                        _ if i + 1 == counts.len() => " or ",
                        _ => ", ",
                    };
                    write!(f, "{sep}{c}")?;
                }
                Ok(())
            }
        }
    }
}

/// The noise schedule ᾱ_t of a model and the step counts it supports, read in place from the
/// model's [`SCHEDULE_TENSOR`] (f32, in flash): nothing is copied to RAM.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    /// ᾱ_0 … ᾱ_{T−1}, f32 little-endian.
    alpha_bar: &'a [u8],
    len: usize,
    steps: StepCounts,
    /// The explicit grid's timesteps (the first `grid_len`).
    grid: [u16; MAX_GRID_STEPS],
    grid_len: u8,
}

impl<'a> Schedule<'a> {
    /// A schedule over ᾱ values stored as little-endian f32 (1 to [`MAX_TIMESTEPS`] of them,
    /// each in (0, 1]); any step count from 1 to T is supported.
    pub fn from_le_bytes(alpha_bar: &'a [u8]) -> Result<Self> {
        let len = alpha_bar.len() / 4;
        if !alpha_bar.len().is_multiple_of(4) || len == 0 || len > MAX_TIMESTEPS {
            return Err(Error::BadParams);
        }
        let s =
            Schedule { alpha_bar, len, steps: StepCounts::UpTo(len as u16), grid: [0; MAX_GRID_STEPS], grid_len: 0 };
        if (0..len).map(|t| s.value(t)).any(|v| !(v > 0.0 && v <= 1.0)) {
            return Err(Error::BadParams);
        }
        Ok(s)
    }

    /// This schedule stepping on the explicit [`GRID_KEY`] grid `text` ([`Error::BadParams`]
    /// unless it holds 1 to [`MAX_GRID_STEPS`] strictly decreasing timesteps below T).
    pub fn with_grid(mut self, text: &str) -> Result<Self> {
        let mut len = 0;
        for part in text.split(',').map(str::trim) {
            let t: u16 = part.parse().map_err(|_| Error::BadParams)?;
            let descending = len == 0 || t < self.grid[len - 1];
            if len == MAX_GRID_STEPS || t as usize >= self.len || !descending {
                return Err(Error::BadParams);
            }
            self.grid[len] = t;
            len += 1;
        }
        self.grid_len = len as u8;
        Ok(self)
    }

    /// The schedule a model carries ([`Error::NotADiffusionModel`] without one), restricted
    /// to the step counts of [`STEPS_KEY`] and stepping on the [`GRID_KEY`] grid when present.
    pub fn of_model(model: &Model<'a>) -> Result<Self> {
        let tensor = (0..model.tensor_count() as u32)
            .map(crate::format::TensorId)
            .find(|&id| model.tensor_name(id) == Some(SCHEDULE_TENSOR))
            .ok_or(Error::NotADiffusionModel)?;
        let view = model.weight_view(&model.tensor(tensor)?)?;
        if view.desc.dtype != crate::DType::F32 || view.desc.shape.rank() != 1 {
            return Err(Error::BadDType);
        }
        let mut s = Self::from_le_bytes(view.bytes)?;
        if let Some(list) = model.metadata(STEPS_KEY) {
            s.steps = StepCounts::parse(list, s.len)?;
        }
        match model.metadata(GRID_KEY) {
            Some(grid) => s.with_grid(grid),
            None => Ok(s),
        }
    }

    fn value(&self, t: usize) -> f32 {
        let b = &self.alpha_bar[4 * t..4 * t + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Number of timesteps T.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the schedule is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The step counts this schedule samples with.
    pub fn step_counts(&self) -> StepCounts {
        self.steps
    }

    /// [`Error::UnsupportedSteps`] unless `steps` is one of [`Schedule::step_counts`].
    pub fn check_steps(&self, steps: usize) -> Result<()> {
        if self.steps.contains(steps) {
            Ok(())
        } else {
            Err(Error::UnsupportedSteps { supported: self.steps })
        }
    }

    /// ᾱ_t (1 for t < 0: clean data).
    pub fn alpha_bar(&self, t: isize) -> f32 {
        if t < 0 {
            1.0
        } else {
            self.value((t as usize).min(self.len - 1))
        }
    }

    /// The timestep of step `i` of `steps`; step `steps` is clean data (−1). On the explicit
    /// [`GRID_KEY`] grid of G timesteps when G/`steps` is a power of two: its timestep
    /// `i·G/steps`. Otherwise uniform: T·(steps − i)/steps − 1, from T − 1 (i = 0) down to
    /// T/steps − 1. Either way the grids of N and 2N steps nest (every other point of the 2N
    /// grid is the N grid), as progressive distillation needs.
    pub fn timestep(&self, i: usize, steps: usize) -> isize {
        if i >= steps || steps == 0 {
            return -1;
        }
        let g = self.grid_len as usize;
        if g.is_multiple_of(steps) && (g / steps).is_power_of_two() {
            return self.grid[i * (g / steps)] as isize;
        }
        (self.len * (steps - i) / steps) as isize - 1
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    fn bytes(values: &[f32]) -> std::vec::Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn schedules_parse_and_spread_their_steps() {
        let b = bytes(&[0.99, 0.9, 0.5, 0.1]);
        let s = Schedule::from_le_bytes(&b).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s.alpha_bar(0), s.alpha_bar(3), s.alpha_bar(-1)), (0.99, 0.1, 1.0));
        let visited: [isize; 5] = core::array::from_fn(|i| s.timestep(i, 4));
        assert_eq!(visited, [3, 2, 1, 0, -1]);
        assert_eq!([s.timestep(0, 2), s.timestep(1, 2), s.timestep(2, 2)], [3, 1, -1]);
        assert_eq!(s.timestep(0, 1), 3);
        for bad in [&[][..], &[0.5, 1.5], &[0.5, 0.0], &[f32::NAN]] {
            assert_eq!(Schedule::from_le_bytes(&bytes(bad)).err(), Some(Error::BadParams), "{bad:?}");
        }
        assert_eq!(Schedule::from_le_bytes(&[0, 0, 0]).err(), Some(Error::BadParams), "not whole f32s");
    }

    #[test]
    fn grids_of_n_and_2n_steps_nest() {
        let b = bytes(&[0.5; 1000]);
        let s = Schedule::from_le_bytes(&b).unwrap();
        for n in [1, 2, 4, 8, 16, 32, 64, 128] {
            for i in 0..n {
                assert_eq!(s.timestep(i, n), s.timestep(2 * i, 2 * n), "{n} steps, step {i}");
            }
        }
    }

    #[test]
    fn explicit_grids_are_checked_and_halve_by_every_other_timestep() {
        let b = bytes(&[0.5; 128]);
        let s = Schedule::from_le_bytes(&b).unwrap().with_grid("127, 111,87,47").unwrap();
        let visited = |n: usize| (0..=n).map(|i| s.timestep(i, n)).collect::<std::vec::Vec<_>>();
        assert_eq!(visited(4), [127, 111, 87, 47, -1]);
        assert_eq!(visited(2), [127, 87, -1]);
        assert_eq!(visited(1), [127, -1]);
        assert_eq!(visited(8), [127, 111, 95, 79, 63, 47, 31, 15, -1], "uniform beyond the grid");
        assert_eq!(visited(3), [127, 84, 41, -1], "uniform where the grid does not halve to it");
        let base = Schedule::from_le_bytes(&b).unwrap();
        let too_long = (0..=MAX_GRID_STEPS).rev().map(|t| format!("{t}")).collect::<std::vec::Vec<_>>().join(",");
        for bad in ["", "127,", "127,127", "47,87", "128", "-1", "x", too_long.as_str()] {
            assert_eq!(base.with_grid(bad).err(), Some(Error::BadParams), "{bad:?}");
        }
    }

    #[test]
    fn listed_step_counts_are_checked_and_named() {
        let b = bytes(&[0.9, 0.5, 0.1, 0.01]);
        let s = Schedule::from_le_bytes(&b).unwrap();
        assert_eq!(s.check_steps(4), Ok(()));
        let Err(Error::UnsupportedSteps { supported }) = s.check_steps(5) else { panic!("5 of 4 steps accepted") };
        assert_eq!(format!("{supported}"), "1 to 4");
        let listed = StepCounts::parse("4, 2,1", 4).unwrap();
        assert!(listed.contains(2) && !listed.contains(3));
        assert_eq!(format!("{listed}"), "4, 2 or 1");
        for bad in ["", "0", "5", "a", "1,1,1,1,1,1,1,1,1"] {
            assert_eq!(StepCounts::parse(bad, 4).err(), Some(Error::BadParams), "{bad:?}");
        }
    }
}
