//! The full measurement of `models/ldm` (the card's tables) and the report row's subset.

use super::{
    mean_row_distance, params_of, Baselines, ConvertedFile, Drawn, FileFigures, GuidanceRow, LdmDir, QualityRow,
    GUIDANCE_RUNS, GUIDANCE_SCALES,
};
use crate::zoo::vae::glyphs::{GLYPH_CLASSES, PIXELS};
use anyhow::{Context, Result};
use mote::diffusion::Method;
use serde::Serialize;
use std::path::Path;

/// Images per unconditional panel of the plots.
const PANEL_IMAGES: usize = 32;
/// Images per class in the class panels.
const PER_CLASS: usize = 8;

/// How far the int8 device file's samples are from the f32 file's, from the same seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Figures {
    /// Energy distance (local features) of the int8 samples over that of the f32 samples.
    pub energy_ratio: f64,
    /// Mean Euclidean distance between int8 and f32 latents from the same noise.
    pub latent_distance: f64,
    /// Mean |int8 − f32| over the pixels of the decoded samples.
    pub pixel_mean_abs: f64,
    /// Largest |int8 − f32| of a decoded pixel.
    pub pixel_max_abs: f32,
}

/// Image sets for the PNG grids: `(label, images)` (256 pixels each).
#[derive(Debug, Clone, Default)]
pub struct Panels {
    /// Unconditional samples, `PANEL_IMAGES` per set (held-out glyphs first).
    pub unconditional: Vec<(String, Vec<f32>)>,
    /// Guided samples at scale 3, one row of 8 per class, per model.
    pub classes: Vec<(String, Vec<f32>)>,
    /// The 4-step student's samples per class at each guidance scale (held-out glyphs first).
    pub guidance: Vec<(String, Vec<f32>)>,
}

/// Everything measured about `models/ldm`.
#[derive(Debug, Clone, Serialize)]
pub struct LdmFigures {
    /// Real-valued weights of the device file (denoiser and decoder).
    pub params: usize,
    /// Rows per denoiser call (images per sample run).
    pub rows: usize,
    /// Timesteps T of the schedule.
    pub timesteps: usize,
    /// The teacher's DDIM step count the students were distilled from.
    pub reference_steps: usize,
    /// Per file.
    pub files: Vec<FileFigures>,
    /// Sample quality, teacher and students.
    pub quality: Vec<QualityRow>,
    /// Class accuracy under guidance.
    pub guidance: Vec<GuidanceRow>,
    /// The comparisons (full evaluation only).
    pub baselines: Option<Baselines>,
    /// Held-out glyphs.
    pub test_images: usize,
    /// int8 against f32 for the 4-step student.
    pub int8: Option<Int8Figures>,
    /// Runtime 4-step samples of the committed `model.mote` against candle's golden samples
    /// (unconditional and guided), max-abs, and their decoding against tract's, max-abs.
    pub golden_samples_max_abs: (f32, f32),
    /// Whether the committed `model.mote` / `model.int8.mote` equal a fresh conversion.
    pub committed_up_to_date: (bool, bool),
    /// Image sets for the plots (not serialised).
    #[serde(skip)]
    pub panels: Panels,
}

impl LdmFigures {
    fn empty(d: &LdmDir) -> Self {
        Self {
            params: 0,
            rows: d.rows(),
            timesteps: d.report.config().timesteps,
            reference_steps: d.reference_steps(),
            files: Vec::new(),
            quality: Vec::new(),
            guidance: Vec::new(),
            baselines: None,
            test_images: d.test.len(),
            int8: None,
            golden_samples_max_abs: (f32::NAN, f32::NAN),
            committed_up_to_date: (false, false),
            panels: Panels::default(),
        }
    }

    /// The DDIM sample-quality row of `model` at `precision` and `steps`.
    pub fn row(&self, model: &str, precision: &str, steps: usize) -> Option<&QualityRow> {
        self.quality
            .iter()
            .find(|r| r.model == model && r.precision == precision && r.steps == steps && r.method == "DDIM")
    }

    /// The guidance row of `model` at `precision`, `steps` and `scale`.
    pub fn guidance_row(&self, model: &str, precision: &str, steps: usize, scale: f32) -> Option<&GuidanceRow> {
        self.guidance
            .iter()
            .find(|r| r.model == model && r.precision == precision && r.steps == steps && r.scale == scale)
    }

    /// The figures of file `model`.
    pub fn file(&self, model: &str) -> Option<&FileFigures> {
        self.files.iter().find(|f| f.file.model == model)
    }
}

/// The first [`PER_CLASS`] images of each class.
fn class_rows(per_class: &[Vec<f32>]) -> Vec<f32> {
    per_class.iter().flat_map(|ims| ims.iter().take(PER_CLASS * PIXELS).copied()).collect()
}

fn int8_figures(f32_row: &QualityRow, f32_set: &Drawn, i8_row: &QualityRow, i8_set: &Drawn, dim: usize) -> Int8Figures {
    let diffs: Vec<f32> = f32_set.images.iter().zip(&i8_set.images).map(|(a, b)| (a - b).abs()).collect();
    Int8Figures {
        energy_ratio: i8_row.energy / f32_row.energy,
        latent_distance: mean_row_distance(&f32_set.latents, &i8_set.latents, dim),
        pixel_mean_abs: diffs.iter().map(|&v| v as f64).sum::<f64>() / diffs.len().max(1) as f64,
        pixel_max_abs: diffs.iter().fold(0f32, |m, &v| m.max(v)),
    }
}

/// Whether the committed device files equal the fresh conversions of `file`.
fn committed(dir: &Path, file: &ConvertedFile) -> (bool, bool) {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
    let int8 = file.int8.as_ref().map(|c| c.bytes.as_slice());
    (read("model.mote") == file.f32.bytes, Some(read("model.int8.mote").as_slice()) == int8)
}

/// Measures `models/ldm` (`dir`) in full: every file present among `teacher`, `student4`,
/// `student2`, `student1`; the teacher with DDPM and DDIM at T steps, DDIM at T/2, 4, 2 and 1
/// steps; each student at its steps; the 4-step student also in int8; guidance on every file
/// (the teacher at T/2 and 4 steps); the baselines.
pub fn evaluate_ldm(dir: &Path) -> Result<LdmFigures> {
    let d = LdmDir::open(dir)?;
    let cfg = d.report.config();
    let mut f = LdmFigures::empty(&d);
    let baselines = d.baselines()?;
    let held_out: Vec<f32> = d.test.images.iter().take(PANEL_IMAGES * PIXELS).copied().collect();
    f.panels.unconditional.push(("held-out glyphs".into(), held_out));
    let test_rows: Vec<Vec<f32>> = (0..GLYPH_CLASSES.len())
        .map(|c| {
            let of_class = (0..d.test.len()).filter(|&i| d.test.labels[i] as usize == c);
            of_class.flat_map(|i| d.test.image(i).to_vec()).collect()
        })
        .collect();
    f.panels.guidance.push(("held-out glyphs".into(), class_rows(&test_rows)));
    let ddim = Method::Ddim { eta: 0.0 };
    let mut sets = Vec::new();
    for model in ["teacher", "student4", "student2", "student1"] {
        if !dir.join(format!("{model}.onnx")).exists() {
            continue;
        }
        let file = d.convert(model, model == "student4")?;
        let mut runs: Vec<(&str, Method, usize, Option<String>)> = Vec::new();
        let guided: Vec<(usize, Vec<f32>)> = if model == "teacher" {
            let t = cfg.timesteps;
            runs.push(("f32", Method::Ddpm, t, None));
            runs.push(("f32", ddim, t, Some(format!("teacher DDIM {t}"))));
            runs.push(("f32", ddim, t / 2, None));
            runs.push(("f32", ddim, 4, Some("teacher DDIM 4".into())));
            runs.push(("f32", ddim, 2, None));
            runs.push(("f32", ddim, 1, None));
            vec![(t / 2, GUIDANCE_SCALES.to_vec()), (4, vec![3.0])]
        } else {
            let steps: usize = model.trim_start_matches("student").parse().context("student<N>")?;
            runs.push(("f32", ddim, steps, Some(format!("{model} f32"))));
            if steps == 4 {
                runs.push(("int8", ddim, steps, Some("student4 int8".into())));
                let bytes = std::fs::read(dir.join("model.mote")).context("model.mote")?;
                f.golden_samples_max_abs = d.golden_samples(model, &bytes, steps)?;
                f.committed_up_to_date = committed(dir, &file);
                f.params = params_of(&file.f32)?;
            }
            vec![(steps, GUIDANCE_SCALES.to_vec())]
        };
        let mut here: Vec<(QualityRow, Drawn)> = Vec::new();
        for (precision, method, steps, plot) in runs {
            let (row, drawn) = d.quality(&file, precision, method, steps)?;
            if let Some(label) = plot {
                f.panels.unconditional.push((label, drawn.images[..PANEL_IMAGES * PIXELS].to_vec()));
            }
            here.push((row, drawn));
        }
        if let [(r32, s32), (r8, s8)] = &here[..] {
            f.int8 = Some(int8_figures(r32, s32, r8, s8, cfg.dim));
        }
        let precisions: &[&str] = if file.int8.is_some() { &["f32", "int8"] } else { &["f32"] };
        for (steps, scales) in guided {
            for &precision in precisions {
                for &scale in &scales {
                    let (row, per_class) = d.guidance(&file, precision, steps, scale, GUIDANCE_RUNS)?;
                    if scale == 3.0 && precision == "f32" {
                        f.panels.classes.push((format!("{model} DDIM {steps}"), class_rows(&per_class)));
                    }
                    if model == "student4" && precision == "f32" {
                        f.panels.guidance.push((format!("scale {scale}"), class_rows(&per_class)));
                    }
                    f.guidance.push(row);
                }
            }
        }
        for (row, drawn) in here {
            f.quality.push(row);
            sets.push(drawn.latents);
        }
        f.files.push(file.figures);
    }
    let reference = f.reference_steps;
    let k = f.quality.iter().position(|r| r.model == "teacher" && r.method == "DDIM" && r.steps == reference);
    if let Some(k) = k {
        let teacher = sets[k].clone();
        for (row, set) in f.quality.iter_mut().zip(&sets) {
            row.vs_teacher = mean_row_distance(set, &teacher, cfg.dim);
        }
    }
    f.baselines = Some(baselines);
    Ok(f)
}

/// The report row's measurements only: the 4-step student with its `decode` entry, f32 and int8.
pub fn evaluate_ldm_student(dir: &Path) -> Result<LdmFigures> {
    let d = LdmDir::open(dir)?;
    let mut f = LdmFigures::empty(&d);
    let file = d.convert("student4", true)?;
    f.params = params_of(&file.f32)?;
    for precision in ["f32", "int8"] {
        f.quality.push(d.quality(&file, precision, Method::Ddim { eta: 0.0 }, 4)?.0);
    }
    f.committed_up_to_date = committed(dir, &file);
    f.files.push(file.figures);
    Ok(f)
}
