//! The runtime's diffusion samplers against a case with a known answer: data x₀ ~ N(μ, diag s²)
//! has the exact noise prediction ε̂(x_t, t) = √(1−ᾱ)·(x_t − √ᾱ·μ) / (ᾱ·s² + 1 − ᾱ), built here
//! as an ONNX graph with the schedule in its metadata. Every sampler must then produce samples
//! with mean μ and standard deviation s, up to its discretisation and sampling error.

use mote::diffusion::{sample, scratch_len, Method, Schedule, SCHEDULE_KEY};
use mote::{Error, Model, Session};
use mote_converters::convert::{convert, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::host::Memory;
use mote_converters::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
use mote_tests::scratch;

const ROWS: usize = 64;
const MEAN: [f32; 2] = [1.5, -0.5];
const STD: [f32; 2] = [0.5, 0.8];
const T: usize = 1000;

/// ᾱ_t of the linear β schedule 1e-4 … 0.02 over 1000 steps (DDPM's).
fn alpha_bar() -> Vec<f32> {
    let mut a = 1.0f64;
    (0..T)
        .map(|t| {
            a *= 1.0 - (1e-4 + (0.02 - 1e-4) * t as f64 / (T - 1) as f64);
            a as f32
        })
        .collect()
}

fn gaussian_denoiser() -> Vec<u8> {
    let mut g = GraphBuilder::new("gaussian_denoiser");
    let x = g.input("x", DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let t = g.input("t", DataType::Int64, &[Dim::Fixed(ROWS as i64)]);
    let table = g.initializer_f32("alpha_bar", &[T as i64], &alpha_bar());
    let a = g.op("Gather", &[&table, &t], vec![]);
    let axes = g.const_i64_vec(&[1]);
    let a = g.op("Unsqueeze", &[&a, &axes], vec![]);
    let one = g.const_f32_scalar(1.0);
    let one_minus_a = g.op("Sub", &[&one, &a], vec![]);
    let mean = g.initializer_f32("mean", &[2], &MEAN);
    let var = g.initializer_f32("var", &[2], &STD.map(|s| s * s));
    let sqrt_a = g.op("Sqrt", &[&a], vec![]);
    let scaled_mean = g.op("Mul", &[&sqrt_a, &mean], vec![]);
    let centred = g.op("Sub", &[&x, &scaled_mean], vec![]);
    let signal_var = g.op("Mul", &[&a, &var], vec![]);
    let spread = g.op("Add", &[&signal_var, &one_minus_a], vec![]);
    let ratio = g.op("Div", &[&centred, &spread], vec![]);
    let noise_std = g.op("Sqrt", &[&one_minus_a], vec![]);
    let eps = g.op_named("Mul", &[&noise_std, &ratio], vec![], "eps");
    g.output(&eps, DataType::Float, &[Dim::Fixed(ROWS as i64), Dim::Fixed(2)]);
    let schedule: Vec<String> = alpha_bar().iter().map(|a| format!("{a:e}")).collect();
    g.metadata(SCHEDULE_KEY, &schedule.join(","));
    let path = scratch("diffusion").join("gaussian.onnx");
    std::fs::write(&path, g.finish()).expect("write onnx");
    let opts = Options {
        quant: QuantMode::F32,
        bounds: Default::default(),
        calibration: None,
        decode: false,
        extra_entries: vec![],
    };
    convert(&path, &opts).expect("convert").bytes
}

/// Mean and standard deviation per dimension over `runs` batches of samples.
fn moments(bytes: &[u8], method: Method, steps: usize, runs: u64) -> ([f32; 2], [f32; 2]) {
    let model = Model::parse(bytes).expect("parse");
    let schedule = Schedule::of_model(&model).expect("schedule");
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let (mut sum, mut sq, mut n) = ([0f64; 2], [0f64; 2], 0.0);
    let mut x = vec![0f32; ROWS * 2];
    let mut work = vec![0f32; scratch_len(x.len())];
    for seed in 0..runs {
        sample(&mut session, &schedule, method, steps, seed, &mut x, &mut work).expect("sample");
        for row in x.chunks(2) {
            for d in 0..2 {
                sum[d] += row[d] as f64;
                sq[d] += (row[d] as f64).powi(2);
            }
            n += 1.0;
        }
    }
    let mean = [0, 1].map(|d| (sum[d] / n) as f32);
    let std = [0, 1].map(|d| ((sq[d] / n - (sum[d] / n).powi(2)).sqrt()) as f32);
    (mean, std)
}

#[test]
fn every_sampler_recovers_the_data_distribution() {
    let bytes = gaussian_denoiser();
    let cases = [
        ("DDPM, 250 steps", Method::Ddpm, 250),
        ("DDIM eta 0, 50 steps", Method::Ddim { eta: 0.0 }, 50),
        ("DDIM eta 1, 100 steps", Method::Ddim { eta: 1.0 }, 100),
        ("Euler-Maruyama, 500 steps", Method::EulerMaruyama, 500),
        ("probability-flow ODE Euler, 200 steps", Method::ProbabilityFlow { heun: false }, 200),
        ("probability-flow ODE Heun, 25 steps", Method::ProbabilityFlow { heun: true }, 25),
    ];
    for (name, method, steps) in cases {
        let (mean, std) = moments(&bytes, method, steps, 16);
        println!("{name}: mean {mean:.3?} (want {MEAN:?}), std {std:.3?} (want {STD:?})");
        for d in 0..2 {
            assert!((mean[d] - MEAN[d]).abs() < 0.08, "{name}: mean {mean:?}");
            assert!((std[d] - STD[d]).abs() < 0.08, "{name}: std {std:?}");
        }
    }
}

#[test]
fn samples_are_reproducible_and_bad_settings_are_errors() {
    let bytes = gaussian_denoiser();
    let model = Model::parse(&bytes).expect("parse");
    let schedule = Schedule::of_model(&model).expect("schedule");
    assert_eq!(schedule.len(), T);
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let mut work = vec![0f32; scratch_len(ROWS * 2)];
    let run = |session: &mut Session, method, steps, seed| {
        let mut x = vec![0f32; ROWS * 2];
        let mut work = vec![0f32; scratch_len(x.len())];
        sample(session, &schedule, method, steps, seed, &mut x, &mut work).map(|_| x)
    };
    let a = run(&mut session, Method::Ddpm, 20, 7).expect("sample");
    assert_eq!(a, run(&mut session, Method::Ddpm, 20, 7).expect("sample"), "same seed, same sample");
    assert_ne!(a, run(&mut session, Method::Ddpm, 20, 8).expect("sample"), "another seed");
    assert_eq!(run(&mut session, Method::Ddpm, 0, 1).err(), Some(Error::BadParams));
    assert_eq!(run(&mut session, Method::Ddpm, T + 1, 1).err(), Some(Error::BadParams));
    assert_eq!(run(&mut session, Method::Ddim { eta: 1.5 }, 10, 1).err(), Some(Error::BadParams));
    let mut x = vec![0f32; ROWS * 2];
    let short = &mut work[..10];
    assert_eq!(sample(&mut session, &schedule, Method::Ddpm, 10, 1, &mut x, short).err(), Some(Error::SizeMismatch));
    let mut wrong = vec![0f32; 6];
    assert_eq!(
        sample(&mut session, &schedule, Method::Ddpm, 10, 1, &mut wrong, &mut work).err(),
        Some(Error::SizeMismatch)
    );
}
