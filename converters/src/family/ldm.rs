//! Figures of the `ldm` family (latent diffusion on the glyph VAE) measured through the
//! converter and the runtime: each denoiser file is converted with the VAE's decoder as its
//! `decode` entry, sampled by `mote::diffusion::sample` (8 latents per run) and decoded by
//! that entry in the same session, exactly as the firmware does.
//!
//! One metric throughout: the energy distance in local features
//! ([`crate::zoo::vae::glyphs::energy_distance_local`]) of decoded samples to the VAE's 512
//! held-out glyphs, against the same measure of fresh glyphs (the floor), of the VAE's own
//! reconstructions of fresh glyphs (the best any model decoded by this decoder can do), of
//! the VAE's prior samples (z ~ N(0, I) decoded), of a Gaussian fitted to the latents, and of
//! the GAN. Guided samples are judged by the k-NN glyph classifier of
//! [`crate::zoo::ldm::classify`].
//!
//! ```no_run
//! let f = mote_converters::family::ldm::evaluate_ldm(std::path::Path::new("models/ldm"))?;
//! println!("{:.4}", f.row("student4", "f32", 4).expect("4-step student").energy);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod baselines;
mod evaluate;

pub use baselines::{Baselines, LatentGaussian};
pub use evaluate::{evaluate_ldm, evaluate_ldm_student, Int8Figures, LdmFigures, Panels};

use super::ddpm2d::{convert_denoiser, reference_steps, DenoiserFile};
use super::m4::DeviceRun;
use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{Calibration, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::zoo::diffusion::train::{GOLDEN_GUIDANCE, GOLDEN_SEED, SAMPLE_SEED};
use crate::zoo::ldm::classify::GlyphKnn;
use crate::zoo::ldm::latents::held_out;
use crate::zoo::ldm::{locate_vae, LdmReport};
use crate::zoo::vae::glyphs::{energy_distance_local, Glyphs, GLYPH_CLASSES, PIXELS};
use crate::{host, verify};
use anyhow::{anyhow, ensure, Result};
use mote::diffusion::{sample, Condition, Method, Request};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The Cortex-M4 run recorded in `m4.json`: one guided 4-step sample, decoded.
pub const DEVICE_RUN: DeviceRun =
    DeviceRun { family: "ldm", file: "model.int8.mote", steps: 4, class: 1, scale: 3.0, tag: "" };

/// Sample runs per quality row (8 latents each: 512 decoded samples, the held-out set's size).
pub const QUALITY_RUNS: u64 = 64;
/// Sample runs per class and guidance scale (8 latents each).
pub const GUIDANCE_RUNS: u64 = 12;
/// Guidance scales measured.
pub const GUIDANCE_SCALES: [f32; 3] = [0.0, 1.0, 3.0];

/// One sample-quality measurement.
#[derive(Debug, Clone, Serialize)]
pub struct QualityRow {
    /// File: `teacher`, `student4`, …
    pub model: String,
    /// `f32` or `int8`.
    pub precision: String,
    /// `DDPM` or `DDIM`.
    pub method: String,
    /// Sampler steps.
    pub steps: usize,
    /// Denoiser MACs per sample (steps × one row's share of a call; unguided).
    pub macs_denoise: u64,
    /// Decoder MACs per sample (one image's share of a `decode` call).
    pub macs_decode: u64,
    /// Energy distance in local features of the decoded unconditional samples to the held-out
    /// glyphs.
    pub energy: f64,
    /// Mean Euclidean distance in latent space of each sample to the teacher's DDIM sample from
    /// the same noise at the step count distillation started from.
    pub vs_teacher: f64,
}

/// One guidance measurement.
#[derive(Debug, Clone, Serialize)]
pub struct GuidanceRow {
    /// File.
    pub model: String,
    /// `f32` or `int8`.
    pub precision: String,
    /// Sampler steps (DDIM).
    pub steps: usize,
    /// Guidance scale (0: unconditional, 1: conditional).
    pub scale: f32,
    /// Fraction of decoded samples (all classes) the classifier assigns to the class asked for.
    pub accuracy: f64,
    /// Energy distance in local features of the class-balanced samples to the held-out glyphs.
    pub energy: f64,
}

/// Size, memory and parity of one converted file (denoiser `forward` + `decode`).
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// Name, step counts, size and memory (int8 when converted; arenas peak over entries).
    #[serde(flatten)]
    pub file: DenoiserFile,
    /// MACs of one `forward` (denoiser) call on a full batch.
    pub macs_denoise_call: u64,
    /// MACs of one `decode` call on a full batch.
    pub macs_decode_call: u64,
    /// f32 `forward` vs tract on the golden denoiser inputs, max-abs.
    pub denoise_vs_tract: f32,
    /// f32 `forward` vs candle's golden outputs, max-abs.
    pub denoise_vs_candle: f32,
    /// f32 `decode` vs tract on the VAE's golden latents, max-abs.
    pub decode_vs_tract: f32,
}

/// One file converted (f32, and int8 when asked) with its figures.
pub struct ConvertedFile {
    /// The f32 conversion.
    pub f32: Converted,
    /// The int8 conversion.
    pub int8: Option<Converted>,
    /// Size, memory and parity.
    pub figures: FileFigures,
}

impl ConvertedFile {
    /// The bytes at `precision` (`f32` or `int8`).
    pub fn bytes(&self, precision: &str) -> Result<&[u8]> {
        match (precision, &self.int8) {
            ("int8", Some(c)) => Ok(&c.bytes),
            ("int8", None) => Err(anyhow!("{} was not converted to int8", self.figures.file.model)),
            _ => Ok(&self.f32.bytes),
        }
    }
}

/// Runtime samples: the latents and their decodings.
#[derive(Debug, Clone, Default)]
pub struct Drawn {
    /// The sampled latents, 8 rows per run.
    pub latents: Vec<f32>,
    /// Their images by the `decode` entry (256 pixels each).
    pub images: Vec<f32>,
}

/// `runs` runtime samples of the converted model `bytes` (run k seeded `seed + k`), each decoded
/// by the file's `decode` entry in the same session.
pub fn sample_and_decode(
    bytes: &[u8],
    method: Method,
    steps: usize,
    condition: Condition,
    runs: u64,
    seed: u64,
) -> Result<Drawn> {
    let model = mote::Model::parse(bytes)?;
    let mut mem = host::Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let e = model.entry_by_name("forward")?;
    let d = model.entry_by_name("decode").map_err(|_| anyhow!("a latent diffusion file needs a 'decode' entry"))?;
    let mut x = vec![0f32; model.tensor(model.entry_input(e, 0)?)?.desc.shape.numel()];
    let k = model.tensor(model.entry_input(d, 0)?)?.desc.shape.numel();
    ensure!(k <= x.len(), "'decode' takes {k} values; a sample has {}", x.len());
    let mut image = vec![0f32; model.tensor(model.entry_output(d, 0)?)?.desc.shape.numel()];
    let mut out = Drawn::default();
    for r in 0..runs {
        let req = Request { method, steps, seed: seed + r, condition };
        sample(&mut session, &req, &mut x).map_err(|e| anyhow!("sampling {steps} steps ({method:?}): {e}"))?;
        session.set_input_f32(d, 0, &x[..k])?;
        session.run(d)?;
        session.output_f32(d, 0, &mut image)?;
        out.latents.extend_from_slice(&x);
        out.images.extend_from_slice(&image);
    }
    Ok(out)
}

/// Options converting `<model>.onnx` of `dir` with the VAE's decoder as `decode`: `n` bounded
/// by the exported batch (the decoder's), int8 calibration of `forward` from `calib/<model>/`
/// (latents noised at the file's own timesteps) and of `decode` from N(0, 1) latents.
pub fn ldm_options(dir: &Path, model: &str, quant: QuantMode) -> Result<Options> {
    let rows = LdmReport::read(dir)?.config().max_batch;
    Ok(Options {
        quant,
        bounds: [("n".to_string(), rows)].into_iter().collect(),
        calibration: Some(Calibration::Dir(dir.join("calib").join(model))),
        decode: false,
        extra_entries: vec![("decode".into(), locate_vae(dir)?.join("decoder.onnx"))],
    })
}

/// A `models/ldm` folder as the measurements see it.
pub struct LdmDir {
    dir: PathBuf,
    vae: PathBuf,
    /// The training report.
    pub report: LdmReport,
    /// The VAE's held-out glyphs.
    pub test: Glyphs,
    /// The class-accuracy judge.
    pub knn: GlyphKnn,
}

impl LdmDir {
    /// Reads the report and the VAE's held-out glyphs and fits the classifier.
    pub fn open(dir: &Path) -> Result<Self> {
        let vae = locate_vae(dir)?;
        let report = LdmReport::read(dir)?;
        Ok(Self { dir: dir.to_path_buf(), test: held_out(&vae)?, vae, report, knn: GlyphKnn::zoo() })
    }

    /// The VAE folder.
    pub fn vae(&self) -> &Path {
        &self.vae
    }

    /// Rows per denoiser call (images per sample run).
    pub fn rows(&self) -> usize {
        self.report.config().max_batch
    }

    /// Converts `<model>.onnx` with its `decode` entry (f32, and int8 when `int8`) and checks
    /// `forward` against tract and candle on the golden denoiser inputs and `decode` against
    /// tract on the VAE's golden latents.
    pub fn convert(&self, model: &str, int8: bool) -> Result<ConvertedFile> {
        let c = convert_denoiser(&self.dir, model, int8, |q| ldm_options(&self.dir, model, q))?;
        let z = Array::read_npy(&self.vae.join("golden/z.npy"))?;
        let decoded = host::run(&c.f32.bytes, "decode", std::slice::from_ref(&z))?.remove(0).to_f32();
        let decoded_tract =
            verify::tract_reference(&self.vae.join("decoder.onnx"), std::slice::from_ref(&z))?.remove(0).to_f32();
        let figures = FileFigures {
            macs_denoise_call: c.f32.entry_macs("forward"),
            macs_decode_call: c.f32.entry_macs("decode"),
            denoise_vs_tract: c.forward_vs_tract,
            denoise_vs_candle: c.forward_vs_candle,
            decode_vs_tract: max_abs(&decoded, &decoded_tract),
            file: c.file,
        };
        Ok(ConvertedFile { f32: c.f32, int8: c.int8, figures })
    }

    /// Sample quality of `file` at `precision` with `method` and `steps`: [`QUALITY_RUNS`]
    /// unconditional runs, decoded, against the held-out glyphs. Returns the row and the samples.
    pub fn quality(
        &self,
        file: &ConvertedFile,
        precision: &str,
        method: Method,
        steps: usize,
    ) -> Result<(QualityRow, Drawn)> {
        let drawn = sample_and_decode(
            file.bytes(precision)?,
            method,
            steps,
            Condition::Unconditional,
            QUALITY_RUNS,
            SAMPLE_SEED,
        )?;
        let rows = self.rows().max(1) as u64;
        let row = QualityRow {
            model: file.figures.file.model.clone(),
            precision: precision.into(),
            method: if method == Method::Ddpm { "DDPM" } else { "DDIM" }.into(),
            steps,
            macs_denoise: file.figures.macs_denoise_call / rows * steps as u64,
            macs_decode: file.figures.macs_decode_call / rows,
            energy: energy_distance_local(&drawn.images, &self.test.images),
            vs_teacher: f64::NAN,
        };
        Ok((row, drawn))
    }

    /// Guided samples of every class: [`GUIDANCE_RUNS`] runs per class (class c's run k seeded
    /// `SAMPLE_SEED + 1000·(c + 1) + k`), DDIM with `steps` at `scale`; the row and the decoded
    /// images per class.
    pub fn guidance(
        &self,
        file: &ConvertedFile,
        precision: &str,
        steps: usize,
        scale: f32,
        runs: u64,
    ) -> Result<(GuidanceRow, Vec<Vec<f32>>)> {
        let mut per_class = Vec::new();
        for class in 0..GLYPH_CLASSES.len() {
            let cond = Condition::Guided { class: class as i32, scale };
            let seed = SAMPLE_SEED + 1000 * (class as u64 + 1);
            let bytes = file.bytes(precision)?;
            per_class.push(sample_and_decode(bytes, Method::Ddim { eta: 0.0 }, steps, cond, runs, seed)?.images);
        }
        let all: Vec<f32> = per_class.concat();
        let hits: usize = per_class
            .iter()
            .enumerate()
            .map(|(c, ims)| ims.chunks_exact(PIXELS).filter(|im| self.knn.classify(im) == c).count())
            .sum();
        let row = GuidanceRow {
            model: file.figures.file.model.clone(),
            precision: precision.into(),
            steps,
            scale,
            accuracy: hits as f64 / (all.len() / PIXELS).max(1) as f64,
            energy: energy_distance_local(&all, &self.test.images),
        };
        Ok((row, per_class))
    }

    /// The baselines of the metric and of the classifier.
    pub fn baselines(&self) -> Result<Baselines> {
        Baselines::measure(self)
    }

    /// The step count distillation started from (`distill_report.json`), else T.
    pub fn reference_steps(&self) -> usize {
        reference_steps(&self.dir, self.report.config().timesteps)
    }

    /// The runtime's 4-step samples (DDIM, [`GOLDEN_SEED`]) of the f32 file `bytes` against
    /// candle's golden samples of `model` (`golden/<model>.{sample,guided}.npy`), max-abs, and
    /// the file's decoding of each against the VAE decoder in tract, max-abs.
    pub fn golden_samples(&self, model: &str, bytes: &[u8], steps: usize) -> Result<(f32, f32)> {
        let (class, scale) = GOLDEN_GUIDANCE;
        let (mut worst, mut decode) = (0f32, 0f32);
        for (cond, file) in
            [(Condition::Unconditional, "sample"), (Condition::Guided { class: class as i32, scale }, "guided")]
        {
            let want = Array::read_npy(&self.dir.join(format!("golden/{model}.{file}.npy")))?;
            let got = sample_and_decode(bytes, Method::Ddim { eta: 0.0 }, steps, cond, 1, GOLDEN_SEED)?;
            worst = worst.max(max_abs(&got.latents, &want.to_f32()));
            let z = Array::f32(want.shape.clone(), got.latents.clone());
            let tract = verify::tract_reference(&self.vae.join("decoder.onnx"), &[z])?.remove(0).to_f32();
            decode = decode.max(max_abs(&got.images, &tract));
        }
        Ok((worst, decode))
    }
}

/// Mean Euclidean distance between corresponding rows of `dim` values.
pub fn mean_row_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let rows = a.chunks_exact(dim.max(1)).zip(b.chunks_exact(dim.max(1)));
    let (mut total, mut n) = (0f64, 0usize);
    for (p, q) in rows {
        total += p.iter().zip(q).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
        n += 1;
    }
    total / n.max(1) as f64
}

impl LdmFigures {
    /// The report row: the device file (4-step student + decode), energy distance in local
    /// features f32 / int8, MACs per decoded sample (4 denoiser steps and the decode).
    pub fn summary(&self) -> FamilyFigures {
        let f = self.file("student4");
        let e = |p: &str| self.row("student4", p, 4).map_or(f64::NAN, |r| r.energy);
        FamilyFigures {
            params: self.params,
            flash_f32: f.map_or(0, |f| f.file.flash_f32),
            flash_int8: f.and_then(|f| f.file.flash_int8).unwrap_or(0),
            arena_int8: f.and_then(|f| f.file.arena_int8).map_or(0, |a| a.0),
            lower_bound_int8: f.and_then(|f| f.file.arena_int8).map_or(0, |a| a.1),
            state_int8: f.map_or(0, |f| f.file.state),
            macs_per_token: self.row("student4", "f32", 4).map_or(0, |r| r.macs_denoise + r.macs_decode),
            f32_vs_tract_max_abs: f.map_or(f32::NAN, |f| f.denoise_vs_tract.max(f.decode_vs_tract)),
            metric: TaskMetric { name: "energy loc 4st".into(), f32: e("f32"), int8: e("int8") },
            committed_int8_up_to_date: self.committed_up_to_date.1,
        }
    }
}

/// Real-valued weights of a converted file (both entries).
pub(crate) fn params_of(c: &Converted) -> Result<usize> {
    stored_params(&c.bytes)
}
