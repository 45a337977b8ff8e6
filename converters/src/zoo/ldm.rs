//! `ldm`: latent diffusion (Rombach et al., 2022) in the latent space of the glyph VAE
//! ([`crate::zoo::vae`]), decoded on the device.
//!
//! The committed VAE encodes the 16×16 glyphs to μ of q(z | x) (16 values, [`latents`]); a
//! class-conditional v-predicting denoiser of the `ddpm2d` kind ([`crate::zoo::diffusion`]: a
//! residual MLP, cosine schedule, classifier-free guidance through a null class) learns those
//! latents for the 6 glyph classes, and progressive distillation turns it into 4-, 2- and
//! 1-step students. The device file is the 4-step student as `forward` plus the VAE's decoder
//! as `decode`: the runtime samples 8 latents from a seed, then decodes them into 8 glyphs.
//!
//! Sample quality is judged in image space only: decoded samples against the VAE's held-out
//! glyphs (energy distance in local features), and guided samples by a k-NN classifier fitted
//! on real glyphs ([`classify`]).
//!
//! ```no_run
//! use mote_converters::zoo::ldm::{distill_ldm, ldm_distill_options, train_ldm, LatentGlyphs};
//! let (out, vae) = (std::path::Path::new("models/ldm"), std::path::Path::new("models/vae"));
//! let data = LatentGlyphs::load(vae)?;
//! let report = train_ldm(out, &data, &mote_converters::zoo::ldm::ldm_train_options(&data))?;
//! distill_ldm(out, &data, &ldm_distill_options(1))?;
//! # let _ = report;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod classify;
pub mod latents;

pub use latents::{LatentGlyphs, LatentStats};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::diffusion::distill::HIGH_NOISE_GRID;
use super::diffusion::{
    distill_on, train_teacher_on, DenoiserConfig, DiffusionData, DistillOptions, DistillReport, TeacherReport,
    TrainOptions,
};

/// Rows per denoiser call: the decoder's batch bound, so one sample decodes to that many glyphs.
pub const ROWS: usize = 8;

/// The denoiser of the zoo model for latents of `dim` values and `classes` classes: T = 128,
/// H = 64, 2 residual blocks, 32 sinusoidal time features, [`ROWS`] rows per call.
pub fn ldm_config(dim: usize, classes: usize) -> DenoiserConfig {
    DenoiserConfig { timesteps: 128, hidden: 64, blocks: 2, time_features: 32, classes, max_batch: ROWS, dim }
}

/// The zoo's teacher training budget on `data`: 20k AdamW steps of 256 latents at lr 8e-3 with
/// an exponential moving average (0.9995) of the weights exported (measured on this data:
/// lr 2e-3 and 4e-3 or no average left the decoded samples further from the data, 3 blocks or
/// batches of 1024 gained little for their cost).
pub fn ldm_train_options(data: &LatentGlyphs) -> TrainOptions {
    TrainOptions {
        config: ldm_config(data.dim(), data.classes()),
        steps: 20_000,
        batch_size: 256,
        lr: 8e-3,
        warmup: 200,
        weight_decay: 1e-4,
        label_dropout: 0.15,
        seed: 42,
        ema: 0.9995,
        noise: 0.0,
        train_points: data.train_set().len(),
        test_points: data.quality_samples(),
        quiet: false,
    }
}

/// The zoo's distillation budget, down to `to` steps: rounds of 2000 AdamW steps of 256 latents
/// at lr 5e-4 from the teacher's 128 DDIM steps, the 8-step students and below on [`HIGH_NOISE_GRID`].
///
/// Measured on this data with uniform grids: 4000 steps per round, lr 1e-3 or starting from
/// 64 steps all left the 4-step student within ±0.005 of the same energy distance (0.1942), and
/// a weight average of decay 0.999 made it worse (0.2124). Neither did one round of 32 teacher
/// steps per student step straight from the teacher (0.1968) nor starting half of the batches
/// from the student's own states (0.1927); hidden width 128 improved teacher and student alike,
/// 0.1301 and 0.1722, so the ratio grew to 132%. The grid brought the 4-step student to 0.1800.
pub fn ldm_distill_options(to: usize) -> DistillOptions {
    DistillOptions {
        from_steps: 128,
        to,
        steps: 2000,
        batch_size: 256,
        lr: 5e-4,
        grid: HIGH_NOISE_GRID.to_vec(),
        ..DistillOptions::default()
    }
}

/// What `mote zoo train ldm` measured (`train_report.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LdmReport {
    /// `ldm`.
    pub family: String,
    /// The teacher's training (its quality figures are energy distances in local features of
    /// decoded candle samples to the held-out glyphs).
    pub teacher: TeacherReport,
    /// The training latents.
    pub latents: LatentStats,
}

impl LdmReport {
    /// Reads `train_report.json` from the family folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not an ldm training report", p.display()))
    }

    /// The denoiser architecture.
    pub fn config(&self) -> DenoiserConfig {
        self.teacher.options.config
    }
}

/// The VAE folder of the family folder `dir`: its sibling `vae` (`models/ldm` → `models/vae`),
/// else `models/vae` under the working directory; an error when neither holds a trained VAE.
pub fn locate_vae(dir: &Path) -> Result<PathBuf> {
    let sibling = dir.parent().map(|p| p.join("vae"));
    let candidates: Vec<PathBuf> = sibling.into_iter().chain([PathBuf::from("models/vae")]).collect();
    for c in &candidates {
        if ["encoder.onnx", "decoder.onnx", "train_report.json", "data/test.npy"].iter().all(|f| c.join(f).exists()) {
            return Ok(c.clone());
        }
    }
    let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!("latent diffusion needs the trained glyph VAE (run `mote zoo train vae`); none in {}", tried.join(" or "))
}

/// Trains the teacher on `data` with `o` into `out` (`teacher.onnx`, golden and calibration
/// files) and writes `train_report.json`.
pub fn train_ldm(out: &Path, data: &LatentGlyphs, o: &TrainOptions) -> Result<LdmReport> {
    let teacher = train_teacher_on(out, o, data)?;
    let report = LdmReport { family: "ldm".into(), teacher, latents: data.stats().clone() };
    std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Distils the teacher of `dir` (trained on `data`) into the students of `o`.
pub fn distill_ldm(dir: &Path, data: &LatentGlyphs, o: &DistillOptions) -> Result<DistillReport> {
    distill_on(dir, o, LdmReport::read(dir)?.config(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zoo_denoiser_fits_the_decoder_batch() {
        let c = ldm_config(16, 6);
        assert_eq!((c.dim, c.classes, c.null_class(), c.max_batch), (16, 6, 6, ROWS));
        let d = ldm_distill_options(4);
        assert_eq!((d.from_steps, d.to), (128, 4));
        assert!(d.from_steps <= c.timesteps);
    }

    #[test]
    fn a_folder_without_a_vae_is_refused() {
        let dir = std::env::temp_dir().join(format!("mote-ldm-novae-{}", std::process::id())).join("ldm");
        // The working directory of unit tests is `converters/`, which has no models/vae.
        let e = locate_vae(&dir).unwrap_err().to_string();
        assert!(e.contains("mote zoo train vae"), "{e}");
        assert!(LdmReport::read(&dir).is_err());
    }
}
