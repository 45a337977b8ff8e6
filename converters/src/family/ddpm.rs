//! Figures of the `ddpm` family (the UNet on glyphs) measured through the converter and the
//! runtime's sampler (`mote::diffusion::sample`) for one of its denoisers (`teacher`, or a
//! distilled `student<N>`) as a device file (`<model>.mote`, one image per call) in f32 and int8: flash, arena against the plan's lower bound, MACs per call, the ops
//! it lowered to; parity with tract and candle on the golden denoiser batch; the runtime's
//! 4-step samples against candle's golden samples; sample quality and guided class accuracy of
//! runtime samples.
//!
//! ```no_run
//! let f = mote_converters::family::ddpm::evaluate_ddpm(std::path::Path::new("models/ddpm"), "student4", true)?;
//! println!("{} MACs per call, energy {:?}", f.macs_per_call, f.quality_f32.energy);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::m4::DeviceRun;
use super::{max_abs, stored_params, FamilyFigures, TaskMetric};
use crate::array::{Array, Data};
use crate::convert::{self, Calibration, Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::verify;
use crate::zoo::diffusion::train::{GOLDEN_GUIDANCE, GOLDEN_SEED, SAMPLE_SEED};
use crate::zoo::unet::evaluate::{classifier, QualityRow};
use crate::zoo::unet::sampling::to_pixels;
use crate::zoo::unet::train::{TeacherReport, GOLDEN};
use crate::zoo::vae::train::energies;
use crate::zoo::vae::PIXELS;
use anyhow::{anyhow, Context, Result};
use mote::diffusion::{sample, Condition, Method, Request};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The Cortex-M4 runs, one guided sample each: the 4-step student (`m4.json`) and the 1-step
/// student (`m4.student1.json`).
pub const DEVICE_RUNS: [DeviceRun; 2] = [
    DeviceRun { family: "ddpm", file: "student4.int8.mote", steps: 4, class: 1, scale: 3.0, tag: "" },
    DeviceRun { family: "ddpm", file: "student1.int8.mote", steps: 1, class: 1, scale: 3.0, tag: "student1" },
];

/// Unconditional runtime samples per quality row (against as many held-out glyphs).
pub const RUNTIME_SAMPLES: usize = 512;
/// Runtime samples per class in each guidance row.
pub const RUNTIME_GUIDED_PER_CLASS: usize = 64;
/// Steps of the teacher's runtime sampling runs (DDIM, the device's budget); a student samples
/// with the one step count it was distilled for.
pub const RUNTIME_STEPS: usize = 4;

/// The DDIM steps `model` samples with on the runtime: `N` for `student<N>`, [`RUNTIME_STEPS`]
/// for the teacher.
pub fn model_steps(model: &str) -> usize {
    model.strip_prefix("student").and_then(|n| n.parse().ok()).unwrap_or(RUNTIME_STEPS)
}
/// Guidance scales measured on the runtime.
pub const RUNTIME_SCALES: [f32; 3] = [0.0, 1.0, 3.0];

/// Class accuracy of runtime samples under one guidance scale.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeGuidance {
    /// Guidance scale.
    pub scale: f32,
    /// Fraction the classifier assigns to the class asked for (f32 file).
    pub accuracy: f64,
}

/// Everything measured about `models/ddpm`.
#[derive(Debug, Clone, Serialize)]
pub struct DdpmFigures {
    /// The denoiser measured (`teacher`, `student4`, ...).
    pub model: String,
    /// DDIM steps of its runtime samples ([`model_steps`]).
    pub steps: usize,
    /// Real-valued weights stored in the f32 file (with the fixed timestep table).
    pub params: usize,
    /// Images per call of the device file.
    pub batch: usize,
    /// f32 / int8 file bytes.
    pub flash: (usize, usize),
    /// f32 arena bytes and the plan's lower bound.
    pub arena_f32: (usize, usize),
    /// int8 arena bytes and the plan's lower bound.
    pub arena_int8: (usize, usize),
    /// State bytes (the sampler's slot).
    pub state: usize,
    /// MACs of one denoiser call (one image).
    pub macs_per_call: u64,
    /// Ops of the f32 file and how often each occurs, in first-seen order.
    pub ops: Vec<(String, usize)>,
    /// Ops of the int8 file that read int8 tensors.
    pub int8_ops: usize,
    /// f32 `.mote` vs tract on the golden batch, max-abs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` vs candle's golden outputs, max-abs.
    pub f32_vs_candle_max_abs: f32,
    /// int8 vs f32 device file on the golden rows: max-abs and the largest |v|.
    pub int8_vs_f32: (f32, f32),
    /// Runtime 4-step samples of the committed f32 file against candle's golden samples
    /// (unconditional and guided), max-abs.
    pub golden_samples_max_abs: f32,
    /// Runtime sample quality, f32 file (DDIM, `steps` steps).
    pub quality_f32: QualityRow,
    /// The same with the int8 file.
    pub quality_int8: QualityRow,
    /// The teacher's f32 file with 2 DDIM steps (full evaluation only).
    pub quality_f32_2: Option<QualityRow>,
    /// Guided class accuracy of runtime samples (f32 file, `steps` steps).
    pub guidance: Vec<RuntimeGuidance>,
    /// Whether the committed `<model>.mote` / `<model>.int8.mote` equal a fresh conversion.
    pub committed_up_to_date: (bool, bool),
    /// The f32 runtime samples (pixels).
    #[serde(skip)]
    pub samples_f32: Vec<f32>,
    /// The int8 runtime samples (pixels, same noise).
    #[serde(skip)]
    pub samples_int8: Vec<f32>,
}

impl DdpmFigures {
    /// The report row: metric = local-feature energy distance of the runtime samples, f32 and
    /// int8; MACs per sample.
    pub fn summary(&self) -> FamilyFigures {
        FamilyFigures {
            params: self.params,
            flash_f32: self.flash.0,
            flash_int8: self.flash.1,
            arena_int8: self.arena_int8.0,
            lower_bound_int8: self.arena_int8.1,
            state_int8: self.state,
            macs_per_token: self.macs_per_call * self.steps as u64,
            f32_vs_tract_max_abs: self.f32_vs_tract_max_abs,
            metric: TaskMetric {
                name: format!("energy loc {}st", self.steps),
                f32: self.quality_f32.energy[1],
                int8: self.quality_int8.energy[1],
            },
            committed_int8_up_to_date: self.committed_up_to_date.1,
        }
    }
}

/// Options converting `<model>.onnx` of `dir` for `batch` images per call, int8 calibration from
/// `calib/<model>/`.
pub fn ddpm_options(dir: &Path, model: &str, quant: QuantMode, batch: usize) -> Options {
    Options {
        quant,
        bounds: [("n".to_string(), batch)].into_iter().collect(),
        calibration: Some(Calibration::Dir(dir.join("calib").join(model))),
        decode: false,
        extra_entries: Vec::new(),
    }
}

/// Converts `<model>.onnx` of `dir` at the device batch (f32, int8).
pub fn convert_device(dir: &Path, model: &str) -> Result<(Converted, Converted)> {
    let batch = TeacherReport::read(dir)?.options.config.max_batch;
    let onnx = dir.join(format!("{model}.onnx"));
    let f = convert::convert(&onnx, &ddpm_options(dir, model, QuantMode::F32, batch))
        .with_context(|| format!("converting {}", onnx.display()))?;
    let i = convert::convert(&onnx, &ddpm_options(dir, model, QuantMode::Int8, batch))?;
    Ok((f, i))
}

/// `count` runtime samples (model space, flattened) of the converted model `bytes` with
/// `steps` DDIM steps under `condition`; each call draws `x`'s rows from seed `seed + k`.
pub fn runtime_samples(bytes: &[u8], steps: usize, condition: Condition, count: usize, seed: u64) -> Result<Vec<f32>> {
    let model = mote::Model::parse(bytes)?;
    let mut mem = host::Memory::for_model(&model);
    let mut session = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let e = model.entry_by_name("denoise").or_else(|_| model.entry_by_name("forward"))?;
    let mut out = vec![0f32; model.tensor(model.entry_input(e, 0)?)?.desc.shape.numel()];
    let mut all = Vec::with_capacity(count * PIXELS);
    let mut k = 0;
    while all.len() < count * PIXELS {
        let req = Request { method: Method::Ddim { eta: 0.0 }, steps, seed: seed + k, condition };
        sample(&mut session, &req, &mut out).map_err(|e| anyhow!("sampling {steps} steps: {e}"))?;
        let take = (count * PIXELS - all.len()).min(out.len());
        all.extend_from_slice(&out[..take]);
        k += 1;
    }
    Ok(all)
}

fn op_counts(c: &Converted) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for o in &c.inspection.ops {
        match out.iter_mut().find(|(n, _)| *n == o.op) {
            Some(e) => e.1 += 1,
            None => out.push((o.op.clone(), 1)),
        }
    }
    out
}

/// Row `i` of a batch-first array, as a batch of one.
pub fn batch_row(a: &Array, i: usize) -> Array {
    let per: usize = a.shape.iter().skip(1).product();
    let mut shape = a.shape.clone();
    if let Some(n) = shape.first_mut() {
        *n = 1;
    }
    match &a.data {
        Data::F32(v) => Array::f32(shape, v[i * per..(i + 1) * per].to_vec()),
        Data::I64(v) => Array::i64(shape, v[i * per..(i + 1) * per].to_vec()),
    }
}

/// Parity on the golden batch: f32 (converted for the batch) vs tract and vs candle; the
/// device files (`f32m`, `i8m`, one image per call) row by row: int8 vs f32 max-abs and the
/// largest |v|.
fn parity(dir: &Path, model: &str, f32m: &Converted, i8m: &Converted) -> Result<(f32, f32, (f32, f32))> {
    let onnx = dir.join(format!("{model}.onnx"));
    let golden = |s: &str| Array::read_npy(&dir.join(format!("golden/{model}.{s}.npy")));
    let inputs = [golden("x")?, golden("t")?, golden("class")?];
    let f = convert::convert(&onnx, &ddpm_options(dir, model, QuantMode::F32, GOLDEN))?;
    let got = host::run(&f.bytes, "forward", &inputs)?.remove(0).to_f32();
    let tract = verify::tract_reference(&onnx, &inputs)?.remove(0).to_f32();
    let (mut worst, mut scale) = (0f32, 0f32);
    for i in 0..GOLDEN {
        let one: Vec<Array> = inputs.iter().map(|a| batch_row(a, i)).collect();
        let want = host::run(&f32m.bytes, "forward", &one)?.remove(0).to_f32();
        let got8 = host::run(&i8m.bytes, "forward", &one)?.remove(0).to_f32();
        worst = worst.max(max_abs(&got8, &want));
        scale = want.iter().fold(scale, |m, v| m.max(v.abs()));
    }
    Ok((max_abs(&got, &tract), max_abs(&got, &golden("v")?.to_f32()), (worst, scale)))
}

/// The f32 device file `bytes` of `model` sampled on the runtime with the golden seeds and
/// `steps` steps against candle's golden samples (unconditional and guided), max-abs.
pub fn golden_samples(dir: &Path, model: &str, bytes: &[u8], steps: usize) -> Result<f32> {
    let (class, scale) = GOLDEN_GUIDANCE;
    let mut worst = 0f32;
    for (cond, file) in
        [(Condition::Unconditional, "sample"), (Condition::Guided { class: class as i32, scale }, "guided")]
    {
        let want = Array::read_npy(&dir.join(format!("golden/{model}.{file}.npy")))?.to_f32();
        let got = runtime_samples(bytes, steps, cond, want.len() / PIXELS, GOLDEN_SEED)?;
        worst = worst.max(max_abs(&got, &want));
    }
    Ok(worst)
}

fn quality(bytes: &[u8], steps: usize, test: &[f32], label: &str) -> Result<(QualityRow, Vec<f32>)> {
    let t0 = Instant::now();
    let smp = to_pixels(&runtime_samples(bytes, steps, Condition::Unconditional, RUNTIME_SAMPLES, SAMPLE_SEED)?);
    let row =
        QualityRow { method: "DDIM".into(), steps, energy: energies(&smp, test), seconds: t0.elapsed().as_secs_f64() };
    eprintln!("runtime {label} DDIM {steps}: energy local {:.4} ({:.0} s)", row.energy[1], row.seconds);
    Ok((row, smp))
}

/// Measures denoiser `model` of `models/ddpm` (`dir`); `full` adds the guidance rows (the
/// slowest part) and, for the teacher, its 2-step quality.
pub fn evaluate_ddpm(dir: &Path, model: &str, full: bool) -> Result<DdpmFigures> {
    let report = TeacherReport::read(dir)?;
    let o = &report.options;
    let steps = model_steps(model);
    let (f32m, i8m) = convert_device(dir, model)?;
    let (f32_vs_tract_max_abs, f32_vs_candle_max_abs, int8_vs_f32) = parity(dir, model, &f32m, &i8m)?;
    let test = o.test_set();
    let test_n = &test.images[..RUNTIME_SAMPLES.min(test.len()) * PIXELS];
    let (quality_f32, samples_f32) = quality(&f32m.bytes, steps, test_n, &format!("{model} f32"))?;
    let (quality_int8, samples_int8) = quality(&i8m.bytes, steps, test_n, &format!("{model} int8"))?;
    let mut guidance = Vec::new();
    let mut quality_f32_2 = None;
    if full {
        if model == "teacher" {
            quality_f32_2 = Some(quality(&f32m.bytes, 2, test_n, "teacher f32")?.0);
        }
        let judge = classifier(o)?;
        for scale in RUNTIME_SCALES {
            let mut smp = Vec::new();
            for c in 0..o.config.classes {
                let cond = Condition::Guided { class: c as i32, scale };
                let seed = SAMPLE_SEED + 1000 * (c as u64 + 1);
                smp.extend(runtime_samples(&f32m.bytes, steps, cond, RUNTIME_GUIDED_PER_CLASS, seed)?);
            }
            let want: Vec<usize> = (0..o.config.classes).flat_map(|c| vec![c; RUNTIME_GUIDED_PER_CLASS]).collect();
            let accuracy = judge.accuracy(&to_pixels(&smp), &want)?;
            eprintln!("runtime {model} guided DDIM {steps}, scale {scale}: class accuracy {accuracy:.3}");
            guidance.push(RuntimeGuidance { scale, accuracy });
        }
    }
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_default();
    let int8_ops = i8m.inspection.ops.iter().filter(|o| o.inputs.iter().any(|i| i.starts_with("i8"))).count();
    Ok(DdpmFigures {
        model: model.to_string(),
        steps,
        params: stored_params(&f32m.bytes)?,
        batch: o.config.max_batch,
        flash: (f32m.bytes.len(), i8m.bytes.len()),
        arena_f32: f32m.arena_and_lower_bound(),
        arena_int8: i8m.arena_and_lower_bound(),
        state: f32m.inspection.state_bytes,
        macs_per_call: f32m.entry_macs("forward"),
        ops: op_counts(&f32m),
        int8_ops,
        f32_vs_tract_max_abs,
        f32_vs_candle_max_abs,
        int8_vs_f32,
        golden_samples_max_abs: golden_samples(dir, model, &f32m.bytes, steps)?,
        quality_f32,
        quality_int8,
        quality_f32_2,
        guidance,
        committed_up_to_date: (
            read(&format!("{model}.mote")) == f32m.bytes,
            read(&format!("{model}.int8.mote")) == i8m.bytes,
        ),
        samples_f32,
        samples_int8,
    })
}
