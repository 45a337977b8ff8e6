//! The exact denoiser of Gaussian data, as an ONNX graph: data x₀ ~ N(μ, diag s²) has the
//! noise prediction ε̂(x_t, t) = √(1−ᾱ)·(x_t − √ᾱ·μ)/(ᾱ·s² + 1 − ᾱ) and the posterior mean
//! E[x₀ | x_t] = μ + √ᾱ·s²·(x_t − √ᾱ·μ)/(ᾱ·s² + 1 − ᾱ), so a correct sampler must return
//! samples with mean μ and standard deviation s, up to its discretisation error. Class
//! conditioning and guidance shift μ linearly, which gives guidance an exact answer too.

use mote::diffusion::{NULL_CLASS_KEY, PREDICTION_KEY, SCHEDULE_KEY, STEPS_KEY};
use mote_converters::convert::{convert, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
use std::path::{Path, PathBuf};

/// Batch rows of `x`.
pub const ROWS: usize = 64;
/// The data mean μ (class 0).
pub const MEAN: [f32; 2] = [1.5, -0.5];
/// The data standard deviation s.
pub const STD: [f32; 2] = [0.5, 0.8];
/// Timesteps of the schedule.
pub const T: usize = 1000;

/// ᾱ_t of the linear β schedule 1e-4 … 0.02 over 1000 steps (DDPM's).
pub fn alpha_bar() -> Vec<f32> {
    let mut a = 1.0f64;
    (0..T)
        .map(|t| {
            a *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / (T - 1) as f64);
            a as f32
        })
        .collect()
}

/// The output parameterisation of a test denoiser.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// The noise ε.
    Epsilon,
    /// The velocity √ᾱ·ε − √(1−ᾱ)·x₀.
    V,
    /// The clean sample x₀.
    Sample,
}

/// Conversion options for an f32 `.mote` without calibration.
pub fn f32_options() -> Options {
    Options {
        quant: QuantMode::F32,
        bounds: Default::default(),
        calibration: None,
        decode: false,
        extra_entries: vec![],
    }
}

/// Converts an ONNX graph to an f32 `.mote` (no calibration).
pub fn convert_f32(onnx: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(convert(onnx, &f32_options())?.bytes)
}

/// Writes into `dir` the exact denoiser of N(μ, diag s²) over [`ROWS`] rows of 2-D `x`,
/// predicting `kind`, with the linear schedule of [`alpha_bar`] in its metadata. With
/// `classes`, an extra `class` input picks μ: class 0 has [`MEAN`], class 1 `−MEAN`, and the
/// unconditional class 2 mean 0. `steps` declares distilled step counts; `schedule` replaces
/// the schedule's text.
pub fn onnx(dir: &Path, kind: Kind, classes: bool, steps: Option<&str>, schedule: Option<&str>) -> PathBuf {
    let mut g = GraphBuilder::new("gaussian_denoiser");
    let x = g.input("x", DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let t = g.input("t", DataType::Int64, &[Dim::Fixed(ROWS as i64)]);
    let table = g.initializer_f32("alpha_bar", &[T as i64], &alpha_bar());
    let a = g.op("Gather", &[&table, &t], vec![]);
    let axes = g.const_i64_vec(&[1]);
    let a = g.op("Unsqueeze", &[&a, &axes], vec![]);
    let one = g.const_f32_scalar(1.0);
    let one_minus_a = g.op("Sub", &[&one, &a], vec![]);
    let mean = if classes {
        let class = g.input("class", DataType::Int64, &[Dim::Fixed(ROWS as i64)]);
        let means = [MEAN, MEAN.map(|m| -m), [0.0; 2]].concat();
        let table = g.initializer_f32("class_mean", &[3, 2], &means);
        g.op("Gather", &[&table, &class], vec![])
    } else {
        g.initializer_f32("mean", &[2], &MEAN)
    };
    let var = g.initializer_f32("var", &[2], &STD.map(|s| s * s));
    let sqrt_a = g.op("Sqrt", &[&a], vec![]);
    let scaled_mean = g.op("Mul", &[&sqrt_a, &mean], vec![]);
    let centred = g.op("Sub", &[&x, &scaled_mean], vec![]);
    let signal_var = g.op("Mul", &[&a, &var], vec![]);
    let spread = g.op("Add", &[&signal_var, &one_minus_a], vec![]);
    let ratio = g.op("Div", &[&centred, &spread], vec![]);
    let noise_std = g.op("Sqrt", &[&one_minus_a], vec![]);
    let eps = g.op("Mul", &[&noise_std, &ratio], vec![]);
    // E[x₀ | x_t] = μ + √ᾱ·s²·(x_t − √ᾱ·μ)/(ᾱ·s² + 1 − ᾱ).
    let shrink = g.op("Mul", &[&sqrt_a, &var], vec![]);
    let shrunk = g.op("Mul", &[&shrink, &ratio], vec![]);
    let x0 = g.op("Add", &[&mean, &shrunk], vec![]);
    let out = match kind {
        Kind::Epsilon => g.op_named("Identity", &[&eps], vec![], "out"),
        Kind::Sample => g.op_named("Identity", &[&x0], vec![], "out"),
        Kind::V => {
            let a_eps = g.op("Mul", &[&sqrt_a, &eps], vec![]);
            let n_x0 = g.op("Mul", &[&noise_std, &x0], vec![]);
            g.op_named("Sub", &[&a_eps, &n_x0], vec![], "out")
        }
    };
    g.output(&out, DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let text: Vec<String> = alpha_bar().iter().map(|a| format!("{a:e}")).collect();
    g.metadata(SCHEDULE_KEY, schedule.unwrap_or(&text.join(",")));
    let prediction = match kind {
        Kind::Epsilon => "epsilon",
        Kind::V => "v",
        Kind::Sample => "sample",
    };
    g.metadata(PREDICTION_KEY, prediction);
    if classes {
        g.metadata(NULL_CLASS_KEY, "2");
    }
    if let Some(steps) = steps {
        g.metadata(STEPS_KEY, steps);
    }
    let name = format!("gaussian_{prediction}_{classes}_{}_{}.onnx", steps.is_some(), schedule.is_some());
    let path = dir.join(name);
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}

/// Writes into `dir` a stand-in latent decoder for the denoiser's samples: `z [ROWS, 2]` →
/// `tanh(z / 2) [ROWS, 2]` (the `decode` entry of a latent diffusion model).
pub fn decoder_onnx(dir: &Path) -> PathBuf {
    let mut g = GraphBuilder::new("toy_decoder");
    let z = g.input("z", DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let half = g.const_f32_scalar(0.5);
    let scaled = g.op("Mul", &[&z, &half], vec![]);
    let y = g.op_named("Tanh", &[&scaled], vec![], "image");
    g.output(&y, DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let path = dir.join("toy_decoder.onnx");
    std::fs::write(&path, g.finish()).expect("write onnx");
    path
}
