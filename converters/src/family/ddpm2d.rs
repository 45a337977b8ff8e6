//! Figures of the `ddpm2d` family measured through the converter and the runtime's sampler
//! (`mote::diffusion::sample`): sample quality (energy distance to held-out data) of the
//! teacher at many steps (DDPM and DDIM) and at few steps, of the distilled students at their
//! step counts, of the int8 4-step student; class accuracy of guided samples; cost per sample
//! (MACs, arena against the plan's lower bound); parity with tract and with candle's golden
//! outputs and samples.
//!
//! Every sample set is drawn as the runtime draws it on a device: batch k of
//! `DenoiserConfig::max_batch` rows uses seed [`SAMPLE_SEED`]` + k`, so every model and
//! method starts from the same noise.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_ddpm2d(std::path::Path::new("models/ddpm2d"))?;
//! let student = f.row("student4", "f32", 4).expect("4-step student");
//! println!("{:.4}", student.energy);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{listed_steps, max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::Array;
use crate::convert::{self, Calibration, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::report::bytes;
use crate::verify;
use crate::zoo::diffusion::metrics::Knn;
use crate::zoo::diffusion::train::{TeacherReport, GOLDEN_GUIDANCE, GOLDEN_SEED, SAMPLE_SEED};
use crate::zoo::toy2d::{energy_distance, unflatten, Gaussian2, Point};
use anyhow::{anyhow, Context, Result};
use mote::diffusion::{sample, Condition, Method, Request};
use serde::Serialize;
use std::path::Path;

/// Samples per sample-quality row (the size of the held-out set).
pub const QUALITY_SAMPLES: usize = 2048;
/// Samples per class and guidance scale in the guidance rows.
pub const GUIDANCE_SAMPLES: usize = 512;
/// Guidance scales measured.
pub const GUIDANCE_SCALES: [f32; 3] = [0.0, 1.0, 3.0];
/// Neighbours of the class-accuracy classifier.
const KNN_K: usize = 15;

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
    /// Denoiser MACs per sample (steps × one row's share of a call).
    pub macs_per_sample: u64,
    /// Energy distance of the runtime's unconditional samples to the held-out data.
    pub energy: f64,
    /// Mean Euclidean distance of each sample to the teacher's DDIM sample from the same noise
    /// at the step count distillation started from ([`reference_steps`]): how far a student or
    /// a quantised file strays from the sample it stands in for.
    pub vs_teacher: f64,
}

/// One guidance measurement.
#[derive(Debug, Clone, Serialize)]
pub struct GuidanceRow {
    /// File.
    pub model: String,
    /// Sampler steps (DDIM).
    pub steps: usize,
    /// Guidance scale (0: unconditional, 1: conditional).
    pub scale: f32,
    /// Fraction of samples of both classes that the k-NN classifier assigns to the class asked for.
    pub accuracy: f64,
    /// Energy distance of the class-balanced samples to the held-out data.
    pub energy: f64,
}

/// Size and memory of one converted denoiser file, the part of its figures that the `ddpm2d`
/// and `ldm` families measure alike (each embeds it, flattened, in its own file figures).
#[derive(Debug, Clone, Serialize)]
pub struct DenoiserFile {
    /// File: `teacher`, `student4`, …
    pub model: String,
    /// Step counts it samples with (empty: any up to T).
    pub steps: Vec<usize>,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes (when converted).
    pub flash_int8: Option<usize>,
    /// f32 arena bytes and the plan's lower bound (peak over entries).
    pub arena_f32: (usize, usize),
    /// int8 arena bytes and the plan's lower bound (when converted).
    pub arena_int8: Option<(usize, usize)>,
    /// State bytes (the sampler's slot).
    pub state: usize,
}

impl DenoiserFile {
    /// The card's table cells of the file, `|`-separated: name, step counts, flash f32 / int8,
    /// arena / lower bound f32, arena / lower bound int8 and state (`—` for what was not
    /// converted).
    pub fn cells(&self) -> String {
        let steps = if self.steps.is_empty() { "any".to_string() } else { format!("{:?}", self.steps) };
        let i8 = self.flash_int8.map_or("—".to_string(), bytes);
        let a8 = self.arena_int8.map_or("—".to_string(), |a| format!("{} / {}", bytes(a.0), bytes(a.1)));
        format!(
            "{} | {steps} | {} / {i8} | {} / {} | {a8} | {}",
            self.model,
            bytes(self.flash_f32),
            bytes(self.arena_f32.0),
            bytes(self.arena_f32.1),
            bytes(self.state)
        )
    }
}

/// A denoiser `<model>.onnx` converted in f32 (and int8 when asked), with its size and memory
/// and the f32 `forward` entry checked on the golden denoiser inputs.
pub struct DenoiserConversion {
    /// The f32 conversion.
    pub f32: Converted,
    /// The int8 conversion, when asked for.
    pub int8: Option<Converted>,
    /// Size and memory.
    pub file: DenoiserFile,
    /// f32 `forward` vs tract on the golden denoiser inputs, max-abs.
    pub forward_vs_tract: f32,
    /// f32 `forward` vs candle's golden outputs, max-abs.
    pub forward_vs_candle: f32,
}

/// Converts `<model>.onnx` of `dir` with `options` (given the precision) in f32, and in int8
/// when `int8`, and runs the f32 file's `forward` entry on the golden denoiser inputs
/// (`golden/<model>.{x,t,class}.npy`) against tract and against candle's outputs
/// (`golden/<model>.v.npy`).
pub fn convert_denoiser(
    dir: &Path,
    model: &str,
    int8: bool,
    options: impl Fn(QuantMode) -> Result<Options>,
) -> Result<DenoiserConversion> {
    let onnx = dir.join(format!("{model}.onnx"));
    let f32m =
        convert::convert(&onnx, &options(QuantMode::F32)?).with_context(|| format!("converting {}", onnx.display()))?;
    let i8m = if int8 { Some(convert::convert(&onnx, &options(QuantMode::Int8)?)?) } else { None };
    let golden = |s: &str| Array::read_npy(&dir.join(format!("golden/{model}.{s}.npy")));
    let inputs = [golden("x")?, golden("t")?, golden("class")?];
    let got = host::run(&f32m.bytes, "forward", &inputs)?.remove(0).to_f32();
    let tract = verify::tract_reference(&onnx, &inputs)?.remove(0).to_f32();
    let file = DenoiserFile {
        model: model.to_string(),
        steps: listed_steps(&f32m),
        flash_f32: f32m.bytes.len(),
        flash_int8: i8m.as_ref().map(|c| c.bytes.len()),
        arena_f32: f32m.arena_and_lower_bound(),
        arena_int8: i8m.as_ref().map(Converted::arena_and_lower_bound),
        state: f32m.inspection.state_bytes,
    };
    Ok(DenoiserConversion {
        forward_vs_tract: max_abs(&got, &tract),
        forward_vs_candle: max_abs(&got, &golden("v")?.to_f32()),
        f32: f32m,
        int8: i8m,
        file,
    })
}

/// Size, memory and parity of one converted file.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// Name, step counts, size and memory (always converted in int8).
    #[serde(flatten)]
    pub file: DenoiserFile,
    /// MACs of one denoiser call on a full batch.
    pub macs_per_call: u64,
    /// f32 `.mote` vs tract on the golden denoiser inputs, max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` vs candle's golden outputs, max-abs.
    pub f32_vs_candle_max_abs: f32,
}

/// Everything measured about `models/ddpm2d`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffusionFigures {
    /// Real-valued weights of one denoiser file (every file has the same architecture).
    pub params: usize,
    /// Rows per denoiser call (the batch the files were converted for).
    pub batch: usize,
    /// Timesteps T of the schedule.
    pub timesteps: usize,
    /// The teacher's DDIM step count the students were distilled from (the reference of
    /// [`QualityRow::vs_teacher`]).
    pub reference_steps: usize,
    /// Per file.
    pub files: Vec<FileFigures>,
    /// Sample quality, teacher and students.
    pub quality: Vec<QualityRow>,
    /// Class accuracy under guidance.
    pub guidance: Vec<GuidanceRow>,
    /// Held-out points.
    pub test_points: usize,
    /// Energy distance of a fresh data draw (the floor).
    pub energy_floor: f64,
    /// Energy distance of samples of a Gaussian fitted to the training data.
    pub energy_gaussian: f64,
    /// Class accuracy of the k-NN classifier on held-out real data.
    pub knn_accuracy_real: f64,
    /// Runtime 4-step samples of the committed f32 `student4.mote` against candle's golden
    /// samples (unconditional and guided), max-abs.
    pub golden_samples_max_abs: f32,
    /// Whether the committed `student4.mote` / `student4.int8.mote` equal a fresh conversion.
    pub committed_up_to_date: (bool, bool),
    /// Sample sets for the plots: `(label, points)` (not serialised).
    #[serde(skip)]
    pub plots: Vec<(String, Vec<Point>)>,
    /// Guided sample sets for the plots: `(label, class 0 points, class 1 points)`.
    #[serde(skip)]
    pub guided_plots: Vec<(String, Vec<Point>, Vec<Point>)>,
    /// The held-out data.
    #[serde(skip)]
    pub test: Vec<Point>,
}

impl DiffusionFigures {
    /// The sample-quality row of `model` at `precision` and `steps` (DDIM).
    pub fn row(&self, model: &str, precision: &str, steps: usize) -> Option<&QualityRow> {
        self.quality
            .iter()
            .find(|r| r.model == model && r.precision == precision && r.steps == steps && r.method == "DDIM")
    }

    /// The guidance row of `model` at `scale`.
    pub fn guidance_row(&self, model: &str, scale: f32) -> Option<&GuidanceRow> {
        self.guidance.iter().find(|r| r.model == model && r.scale == scale)
    }

    /// The figures of file `model`.
    pub fn file(&self, model: &str) -> Option<&FileFigures> {
        self.files.iter().find(|f| f.file.model == model)
    }

    /// The report row: the 4-step student (the device file): energy distance f32 / int8 and
    /// MACs per sample.
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
            macs_per_token: self.row("student4", "f32", 4).map_or(0, |r| r.macs_per_sample),
            f32_vs_tract_max_abs: f.map_or(f32::NAN, |f| f.f32_vs_tract_max_abs),
            metric: TaskMetric { name: "energy dist 4st".into(), f32: e("f32"), int8: e("int8") },
            committed_int8_up_to_date: self.committed_up_to_date.1,
        }
    }
}

/// Options converting `<model>.onnx` of `dir`: `n` bounded by the exported batch, int8
/// calibration from `calib/<model>/` (data noised at the file's own timesteps).
pub fn ddpm2d_options(dir: &Path, model: &str, quant: QuantMode) -> Result<Options> {
    let batch = TeacherReport::read(dir)?.options.config.max_batch;
    Ok(Options {
        quant,
        bounds: [("n".to_string(), batch)].into_iter().collect(),
        calibration: Some(Calibration::Dir(dir.join("calib").join(model))),
        decode: false,
        extra_entries: Vec::new(),
    })
}

/// `count` runtime samples of the converted model `bytes` for `method`, `steps`, `condition`:
/// batch k with seed `seed + k`.
pub fn runtime_samples(
    bytes: &[u8],
    method: Method,
    steps: usize,
    condition: Condition,
    count: usize,
    seed: u64,
) -> Result<Vec<Point>> {
    let model = mote::Model::parse(bytes)?;
    let mut mem = host::Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let e = model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))?;
    let mut out = vec![0f32; model.tensor(model.entry_input(e, 0)?)?.desc.shape.numel()];
    if out.len() < 2 {
        return Err(anyhow!("the denoiser's x input holds no 2-D point"));
    }
    let mut points = Vec::with_capacity(count);
    let mut k = 0;
    while points.len() < count {
        let req = Request { method, steps, seed: seed + k, condition };
        sample(&mut session, &req, &mut out).map_err(|e| anyhow!("sampling {steps} steps ({method:?}): {e}"))?;
        points.extend(unflatten(&out).into_iter().take(count - points.len()));
        k += 1;
    }
    Ok(points)
}

/// One model file converted in f32 and int8, with its figures.
pub struct ConvertedFile {
    /// The f32 conversion.
    pub f32: Converted,
    /// The int8 conversion.
    pub int8: Converted,
    /// Size, memory and parity.
    pub figures: FileFigures,
}

impl ConvertedFile {
    /// The conversion at `precision` (`f32` or `int8`).
    pub fn bytes(&self, precision: &str) -> &[u8] {
        if precision == "int8" {
            &self.int8.bytes
        } else {
            &self.f32.bytes
        }
    }
}

/// A `models/ddpm2d` folder as the measurements see it: its training settings, the held-out
/// data and the class-accuracy classifier.
pub struct Ddpm2dDir {
    dir: std::path::PathBuf,
    /// The teacher's training report (architecture, data).
    pub report: TeacherReport,
    /// The held-out data.
    pub test: Vec<Point>,
    knn: Knn,
}

impl Ddpm2dDir {
    /// Reads `train_report.json` and `data/test.npy` of `dir` and fits the classifier.
    pub fn open(dir: &Path) -> Result<Self> {
        let report = TeacherReport::read(dir)?;
        let test = unflatten(&Array::read_npy(&dir.join("data/test.npy"))?.to_f32());
        let (train, labels) = report.options.train_set();
        let knn = Knn::fit(&train, &labels, report.options.config.classes, KNN_K);
        Ok(Self { dir: dir.to_path_buf(), report, test, knn })
    }

    /// Rows per denoiser call.
    pub fn batch(&self) -> usize {
        self.report.options.config.max_batch
    }

    /// Converts `<model>.onnx` (f32 and int8) and checks the f32 file against tract and candle
    /// on the golden denoiser inputs.
    pub fn convert(&self, model: &str) -> Result<ConvertedFile> {
        let c = convert_denoiser(&self.dir, model, true, |q| ddpm2d_options(&self.dir, model, q))?;
        let figures = FileFigures {
            macs_per_call: c.f32.entry_macs("forward"),
            f32_vs_tract_max_abs: c.forward_vs_tract,
            f32_vs_candle_max_abs: c.forward_vs_candle,
            file: c.file,
        };
        let int8 = c.int8.ok_or_else(|| anyhow!("{model} was not converted to int8"))?;
        Ok(ConvertedFile { f32: c.f32, int8, figures })
    }

    /// Sample quality of `file` at `precision` with `method` and `steps`: [`QUALITY_SAMPLES`]
    /// unconditional runtime samples against the held-out data. Returns the row and the samples.
    pub fn quality(
        &self,
        file: &ConvertedFile,
        precision: &str,
        method: Method,
        steps: usize,
    ) -> Result<(QualityRow, Vec<Point>)> {
        let smp = runtime_samples(
            file.bytes(precision),
            method,
            steps,
            Condition::Unconditional,
            QUALITY_SAMPLES,
            SAMPLE_SEED,
        )?;
        let per_row = file.figures.macs_per_call / self.batch().max(1) as u64;
        let row = QualityRow {
            model: file.figures.file.model.clone(),
            precision: precision.into(),
            method: if method == Method::Ddpm { "DDPM" } else { "DDIM" }.into(),
            steps,
            macs_per_sample: per_row * steps as u64,
            energy: energy_distance(&smp, &self.test),
            vs_teacher: f64::NAN,
        };
        Ok((row, smp))
    }

    /// Class accuracy of `file` (f32) sampled with `steps` DDIM steps and guidance `scale`:
    /// [`GUIDANCE_SAMPLES`] samples of each class. Returns the row and the samples per class.
    pub fn guidance(&self, file: &ConvertedFile, steps: usize, scale: f32) -> Result<(GuidanceRow, Vec<Vec<Point>>)> {
        let classes = self.report.options.config.classes;
        let mut per_class = Vec::new();
        for class in 0..classes {
            let cond = Condition::Guided { class: class as i32, scale };
            let seed = SAMPLE_SEED + 1000 * (class as u64 + 1);
            per_class.push(runtime_samples(
                &file.f32.bytes,
                Method::Ddim { eta: 0.0 },
                steps,
                cond,
                GUIDANCE_SAMPLES,
                seed,
            )?);
        }
        let hits: usize =
            per_class.iter().enumerate().map(|(c, p)| p.iter().filter(|&&q| self.knn.classify(q) == c).count()).sum();
        let all: Vec<Point> = per_class.concat();
        let row = GuidanceRow {
            model: file.figures.file.model.clone(),
            steps,
            scale,
            accuracy: hits as f64 / all.len().max(1) as f64,
            energy: energy_distance(&all, &self.test),
        };
        Ok((row, per_class))
    }

    /// Class accuracy of the classifier on the labelled held-out data.
    pub fn knn_accuracy_real(&self) -> f64 {
        let o = &self.report.options;
        let (real, truth) = crate::zoo::diffusion::metrics::labelled_moons(
            o.test_points,
            o.noise,
            crate::zoo::coupling::train::TEST_SEED,
        );
        self.knn.accuracy(&real, |i| truth[i])
    }

    /// Energy distances of a fresh data draw (the floor) and of a Gaussian fitted to the
    /// training data.
    pub fn baselines(&self) -> (f64, f64) {
        let o = &self.report.options;
        let (train, _) = o.train_set();
        let gauss = Gaussian2::fit(&train).sample(self.test.len(), crate::zoo::coupling::train::BASELINE_SEED);
        (energy_distance(&o.floor_set(), &self.test), energy_distance(&gauss, &self.test))
    }
}

/// Measures `models/ddpm2d` (`dir`) in full (the card's acceptance table): every file present
/// among `teacher`, `student4`, `student2`, `student1`; the teacher with DDPM and DDIM at T
/// steps, DDIM at T/2, 4, 2 and 1 steps; each student at its steps; the 4-step student also in
/// int8; guidance on the teacher (T/2 steps) and on the 4-step student.
pub fn evaluate_ddpm2d(dir: &Path) -> Result<DiffusionFigures> {
    let d = Ddpm2dDir::open(dir)?;
    let cfg = d.report.options.config;
    let mut f = DiffusionFigures::empty(&d);
    let ddim = Method::Ddim { eta: 0.0 };
    let mut sets = Vec::new();
    for model in ["teacher", "student4", "student2", "student1"] {
        if !dir.join(format!("{model}.onnx")).exists() {
            continue;
        }
        let file = d.convert(model)?;
        f.params = stored_params(&file.f32.bytes)?;
        let mut runs: Vec<(&str, Method, usize, Option<String>)> = Vec::new();
        let guided_steps = if model == "teacher" {
            let t = cfg.timesteps;
            runs.push(("f32", Method::Ddpm, t, None));
            runs.push(("f32", ddim, t, Some(format!("teacher DDIM {t}"))));
            runs.push(("f32", ddim, t / 2, None));
            runs.push(("f32", ddim, 4, Some("teacher DDIM 4 (undistilled)".into())));
            runs.push(("f32", ddim, 2, None));
            runs.push(("f32", ddim, 1, None));
            t / 2
        } else {
            let steps: usize = model.trim_start_matches("student").parse()?;
            runs.push(("f32", ddim, steps, Some(format!("{model} f32"))));
            if steps == 4 {
                runs.push(("int8", ddim, steps, Some("student4 int8".into())));
                let committed = std::fs::read(dir.join("student4.mote")).context("student4.mote")?;
                f.golden_samples_max_abs = golden_samples(dir, model, &committed, steps)?;
                let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
                f.committed_up_to_date =
                    (read("student4.mote") == file.f32.bytes, read("student4.int8.mote") == file.int8.bytes);
            }
            steps
        };
        for (precision, method, steps, plot) in runs {
            let (row, smp) = d.quality(&file, precision, method, steps)?;
            f.quality.push(row);
            if let Some(label) = plot {
                f.plots.push((label, smp.clone()));
            }
            sets.push(smp);
        }
        if model == "teacher" || model == "student4" {
            for scale in GUIDANCE_SCALES {
                let (row, per_class) = d.guidance(&file, guided_steps, scale)?;
                f.guidance.push(row);
                if let [a, b, ..] = &per_class[..] {
                    f.guided_plots.push((format!("{model} scale {scale}"), a.clone(), b.clone()));
                }
            }
        }
        f.files.push(file.figures);
    }
    let source = reference_steps(dir, cfg.timesteps);
    if let Some(k) = f.quality.iter().position(|r| r.model == "teacher" && r.method == "DDIM" && r.steps == source) {
        let reference = sets[k].clone();
        for (row, set) in f.quality.iter_mut().zip(&sets) {
            row.vs_teacher = mean_distance(set, &reference);
        }
    }
    Ok(f)
}

/// The teacher's DDIM step count the students were distilled from (`distill_report.json`), else T.
pub fn reference_steps(dir: &Path, timesteps: usize) -> usize {
    crate::zoo::diffusion::DistillReport::read(dir).map_or(timesteps, |r| r.options.from_steps)
}

/// Mean Euclidean distance between corresponding points of two sets.
pub fn mean_distance(a: &[Point], b: &[Point]) -> f64 {
    let total: f64 = a.iter().zip(b).map(|(p, q)| ((p[0] - q[0]) as f64).hypot((p[1] - q[1]) as f64)).sum();
    total / a.len().min(b.len()).max(1) as f64
}

/// The report row's measurements only: the 4-step student, f32 and int8.
pub fn evaluate_ddpm2d_student(dir: &Path) -> Result<DiffusionFigures> {
    let d = Ddpm2dDir::open(dir)?;
    let mut f = DiffusionFigures::empty(&d);
    let file = d.convert("student4")?;
    f.params = stored_params(&file.f32.bytes)?;
    for precision in ["f32", "int8"] {
        f.quality.push(d.quality(&file, precision, Method::Ddim { eta: 0.0 }, 4)?.0);
    }
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_default();
    f.committed_up_to_date = (read("student4.mote") == file.f32.bytes, read("student4.int8.mote") == file.int8.bytes);
    f.files.push(file.figures);
    Ok(f)
}

impl DiffusionFigures {
    fn empty(d: &Ddpm2dDir) -> Self {
        let (energy_floor, energy_gaussian) = d.baselines();
        Self {
            params: 0,
            batch: d.batch(),
            timesteps: d.report.options.config.timesteps,
            reference_steps: reference_steps(&d.dir, d.report.options.config.timesteps),
            files: Vec::new(),
            quality: Vec::new(),
            guidance: Vec::new(),
            test_points: d.test.len(),
            energy_floor,
            energy_gaussian,
            knn_accuracy_real: d.knn_accuracy_real(),
            golden_samples_max_abs: f32::NAN,
            committed_up_to_date: (false, false),
            plots: vec![("held-out data".to_string(), d.test.clone())],
            guided_plots: Vec::new(),
            test: d.test.clone(),
        }
    }
}

/// The f32 file `bytes` of `model` sampled on the runtime with the golden seed against
/// candle's golden samples of `dir` (`golden/<model>.{sample,guided}.npy`, unconditional and
/// guided), max-abs.
pub fn golden_samples(dir: &Path, model: &str, bytes: &[u8], steps: usize) -> Result<f32> {
    let (class, scale) = GOLDEN_GUIDANCE;
    let mut worst = 0f32;
    for (cond, file) in
        [(Condition::Unconditional, "sample"), (Condition::Guided { class: class as i32, scale }, "guided")]
    {
        let want = Array::read_npy(&dir.join(format!("golden/{model}.{file}.npy")))?.to_f32();
        let got = runtime_samples(bytes, Method::Ddim { eta: 0.0 }, steps, cond, want.len() / 2, GOLDEN_SEED)?;
        let got: Vec<f32> = got.iter().flatten().copied().collect();
        worst = worst.max(max_abs(&got, &want));
    }
    Ok(worst)
}
