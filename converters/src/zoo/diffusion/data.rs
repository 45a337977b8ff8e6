//! What a diffusion family trains on and is scored by: labelled vectors of one dimension and a
//! sample-quality measure ([`DiffusionData`]). Teacher training, distillation, the golden and
//! calibration files all take it as input, so one trainer serves every family whose denoiser is
//! [`super::Denoiser`]: `ddpm2d` on labelled two moons ([`Moons`]) and `ldm` on the VAE's glyph
//! latents (`zoo::ldm`).
//!
//! ```
//! use mote_converters::zoo::diffusion::{DiffusionData, Moons, TrainOptions};
//! let o = TrainOptions { train_points: 256, test_points: 128, ..TrainOptions::default() };
//! let moons = Moons::new(&o);
//! assert_eq!((moons.dim(), moons.train_set().len()), (2, 256));
//! // Held-out data scores at the floor against itself.
//! assert!(moons.quality(&moons.train_set().values).unwrap() > 0.0);
//! ```

use std::path::Path;

use anyhow::{ensure, Result};

use super::metrics::labelled_moons;
use super::train::TrainOptions;
use crate::array::Array;
use crate::zoo::coupling::train::{FLOOR_SEED, TEST_SEED, TRAIN_SEED};
use crate::zoo::toy2d::{energy_distance, flatten, two_moons, unflatten, Point};

/// Rows of `dim` values back to back, each with a class label.
#[derive(Clone, Debug, PartialEq)]
pub struct Labelled {
    /// Values per row.
    pub dim: usize,
    /// `len() · dim` values.
    pub values: Vec<f32>,
    /// The class of each row.
    pub labels: Vec<usize>,
}

impl Labelled {
    /// Rows `values` (of `dim` values each) with their `labels`; the counts must agree.
    pub fn new(dim: usize, values: Vec<f32>, labels: Vec<usize>) -> Result<Self> {
        ensure!(
            dim > 0 && values.len() == dim * labels.len(),
            "{} values for {} rows of {dim}",
            values.len(),
            labels.len()
        );
        Ok(Self { dim, values, labels })
    }

    /// Labelled points in the plane.
    pub fn from_points(points: &[Point], labels: Vec<usize>) -> Self {
        Self { dim: 2, values: flatten(points), labels }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// A family's data as the diffusion trainer sees it.
pub trait DiffusionData {
    /// `mote.family` of the exported graphs (also their name, `<family>_denoise`).
    fn family(&self) -> &str;
    /// The training rows.
    fn train_set(&self) -> &Labelled;
    /// Rows noised into the calibration and golden batches of every exported file (a draw
    /// separate from the training rows).
    fn calibration_set(&self) -> &Labelled;
    /// Samples per quality measurement.
    fn quality_samples(&self) -> usize;
    /// Sample quality of `quality_samples()` rows of samples (flattened), lower is better: the
    /// family's distance to its held-out data.
    fn quality(&self, samples: &[f32]) -> Result<f64>;
    /// The measure for a fresh draw of the data (its noise floor).
    fn floor(&self) -> Result<f64>;
    /// Writes what the family keeps of its data next to the model (default: nothing).
    fn write_data(&self, out: &Path) -> Result<()> {
        let _ = out;
        Ok(())
    }
    /// Values per row.
    fn dim(&self) -> usize {
        self.train_set().dim
    }
}

/// `ddpm2d`'s data: labelled two moons (class = moon) with the flows' seeds; quality is the
/// energy distance of points to the held-out moons.
#[derive(Clone, Debug)]
pub struct Moons {
    train: Labelled,
    calibration: Labelled,
    test: Vec<Point>,
    floor: Vec<Point>,
}

impl Moons {
    /// The sets of `o` ([`TrainOptions::train_set`], [`TrainOptions::test_set`],
    /// [`TrainOptions::floor_set`]) and 4096 calibration points.
    pub fn new(o: &TrainOptions) -> Self {
        let (points, labels) = o.train_set();
        let (cal, cal_labels) = labelled_moons(4096, 0.1, TRAIN_SEED ^ 0xca1);
        Self {
            train: Labelled::from_points(&points, labels),
            calibration: Labelled::from_points(&cal, cal_labels),
            test: two_moons(o.test_points, o.noise, TEST_SEED),
            floor: two_moons(o.test_points, o.noise, FLOOR_SEED),
        }
    }

    /// The held-out points.
    pub fn test(&self) -> &[Point] {
        &self.test
    }
}

impl DiffusionData for Moons {
    fn family(&self) -> &str {
        "ddpm2d"
    }

    fn train_set(&self) -> &Labelled {
        &self.train
    }

    fn calibration_set(&self) -> &Labelled {
        &self.calibration
    }

    fn quality_samples(&self) -> usize {
        self.test.len()
    }

    fn quality(&self, samples: &[f32]) -> Result<f64> {
        Ok(energy_distance(&unflatten(samples), &self.test))
    }

    fn floor(&self) -> Result<f64> {
        Ok(energy_distance(&self.floor, &self.test))
    }

    /// `data/test.npy`: the held-out points `[n, 2]`.
    fn write_data(&self, out: &Path) -> Result<()> {
        let data = out.join("data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        Array::f32(vec![self.test.len(), 2], flatten(&self.test)).write_npy(&data.join("test.npy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_rows_check_their_counts() {
        assert!(Labelled::new(3, vec![0.0; 6], vec![0, 1]).is_ok());
        assert!(Labelled::new(3, vec![0.0; 7], vec![0, 1]).is_err());
        assert!(Labelled::new(0, vec![], vec![]).is_err());
        let l = Labelled::new(2, vec![1.0, 2.0, 3.0, 4.0], vec![1, 0]).unwrap();
        assert_eq!((l.len(), l.row(1)), (2, &[3.0, 4.0][..]));
    }

    #[test]
    fn moons_are_the_options_sets_and_score_fresh_data_low() -> Result<()> {
        let o = TrainOptions { train_points: 512, test_points: 256, ..TrainOptions::default() };
        let m = Moons::new(&o);
        let (points, labels) = o.train_set();
        assert_eq!(m.train_set(), &Labelled::from_points(&points, labels));
        assert_eq!(m.test(), &o.test_set()[..]);
        let floor = m.floor()?;
        let shifted: Vec<f32> = flatten(&o.floor_set()).iter().map(|v| v + 1.0).collect();
        assert!(floor < 0.05 && m.quality(&shifted)? > 10.0 * floor, "{floor}");
        Ok(())
    }
}
