//! Acceptance of the committed `ddpm2d` family (`models/ddpm2d`): a class-conditional
//! v-predicting diffusion model on two moons and its progressively distilled 4-, 2- and 1-step
//! students, sampled by the runtime (`mote::diffusion::sample`).
//!
//! - the denoiser files run on the runtime as in tract and candle;
//! - the runtime's 4-step sampler reproduces candle's golden samples (same seed, same noise);
//! - sample quality (energy distance to held-out data, same seeds for every model): the 4-step
//!   student is within 10% of the teacher at many steps and far better than the teacher at 4
//!   steps; the 2- and 1-step students beat the teacher at 2 and 1 steps;
//! - int8 against f32 for the 4-step student;
//! - classifier-free guidance raises the class accuracy of conditional samples;
//! - misuse is a typed error.

use mote::diffusion::{sample, Condition, Method, Request, StepCounts, GRID_KEY, SCHEDULE_KEY};
use mote::{Error, Model, Session};
use mote_converters::array::Array;
use mote_converters::convert::{convert, Options};
use mote_converters::emit::dtypes::QuantMode;
use mote_converters::family::ddpm2d::{
    golden_samples, mean_distance, reference_steps, ConvertedFile, GuidanceRow, QualityRow, GUIDANCE_SCALES,
};
use mote_converters::family::{ddpm2d_options, Ddpm2dDir};
use mote_converters::host::{self, Memory};
use mote_converters::zoo::onnx_builder::{DataType, Dim, GraphBuilder};
use mote_converters::zoo::toy2d::Point;
use mote_tests::{model_dir, scratch};
use std::sync::OnceLock;

/// Steps of the many-step teacher: the DDIM run distillation started from (T).
fn many() -> usize {
    reference_steps(&model_dir("ddpm2d"), fixture().dir.report.options.config.timesteps)
}

struct Fixture {
    dir: Ddpm2dDir,
    teacher: ConvertedFile,
    student4: ConvertedFile,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let path = model_dir("ddpm2d");
        let dir = Ddpm2dDir::open(&path).unwrap_or_else(|e| panic!("open {}: {e:#}", path.display()));
        let teacher = dir.convert("teacher").expect("convert teacher");
        let student4 = dir.convert("student4").expect("convert student4");
        Fixture { dir, teacher, student4 }
    })
}

fn quality(file: &ConvertedFile, precision: &str, steps: usize) -> (QualityRow, Vec<Point>) {
    let f = fixture();
    let (row, samples) = f.dir.quality(file, precision, Method::Ddim { eta: 0.0 }, steps).expect("sample");
    println!(
        "{} {precision} DDIM {steps}: energy distance {:.5}, {} MACs/sample",
        row.model, row.energy, row.macs_per_sample
    );
    (row, samples)
}

fn teacher_many() -> &'static (QualityRow, Vec<Point>) {
    static R: OnceLock<(QualityRow, Vec<Point>)> = OnceLock::new();
    R.get_or_init(|| quality(&fixture().teacher, "f32", many()))
}

fn student4(precision: &str) -> &'static (QualityRow, Vec<Point>) {
    static F32: OnceLock<(QualityRow, Vec<Point>)> = OnceLock::new();
    static I8: OnceLock<(QualityRow, Vec<Point>)> = OnceLock::new();
    let cell = if precision == "int8" { &I8 } else { &F32 };
    cell.get_or_init(|| quality(&fixture().student4, precision, 4))
}

#[test]
fn every_denoiser_file_matches_tract_and_candle() {
    let f = fixture();
    let dir = model_dir("ddpm2d");
    let others: Vec<ConvertedFile> =
        ["student2", "student1"].iter().map(|m| f.dir.convert(m).expect("convert")).collect();
    for file in [&f.teacher, &f.student4].into_iter().chain(&others) {
        let (model, figures) = (&file.figures.file.model, &file.figures);
        println!(
            "{model}: steps {:?}, vs tract {:.1e}, vs candle {:.1e}",
            figures.file.steps, figures.f32_vs_tract_max_abs, figures.f32_vs_candle_max_abs
        );
        assert!(figures.f32_vs_tract_max_abs <= 1e-4, "{model}: {}", figures.f32_vs_tract_max_abs);
        assert!(figures.f32_vs_candle_max_abs <= 1e-4, "{model}: {}", figures.f32_vs_candle_max_abs);
        let want: Vec<usize> =
            model.strip_prefix("student").map(|n| vec![n.parse().expect("steps")]).unwrap_or_default();
        assert_eq!(figures.file.steps, want, "{model}: supported step counts");
    }
    // The committed device file itself on the golden batch.
    let bytes = std::fs::read(dir.join("student4.mote")).expect("student4.mote");
    let golden = |s: &str| Array::read_npy(&dir.join(format!("golden/student4.{s}.npy"))).expect("golden");
    let got =
        host::run(&bytes, "forward", &[golden("x"), golden("t"), golden("class")]).expect("run").remove(0).to_f32();
    let want = golden("v").to_f32();
    let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(got.len(), want.len());
    assert!(worst <= 1e-4, "committed student4.mote vs candle {worst}");
    // And it is what a fresh conversion writes.
    assert_eq!(bytes, f.student4.f32.bytes, "student4.mote is stale: run `mote zoo refresh ddpm2d`");
    let int8 = std::fs::read(dir.join("student4.int8.mote")).expect("student4.int8.mote");
    assert_eq!(int8, f.student4.int8.bytes, "student4.int8.mote is stale: run `mote zoo refresh ddpm2d`");
}

#[test]
fn runtime_sampler_reproduces_candle_golden_samples() {
    let dir = model_dir("ddpm2d");
    for steps in [4, 2, 1] {
        let model = format!("student{steps}");
        // The committed device file for 4 steps; the others converted as it is.
        let bytes = if steps == 4 {
            std::fs::read(dir.join("student4.mote")).expect("student4.mote")
        } else {
            let opts = ddpm2d_options(&dir, &model, QuantMode::F32).expect("options");
            convert(&dir.join(format!("{model}.onnx")), &opts).expect("convert").bytes
        };
        let worst = golden_samples(&dir, &model, &bytes, steps).expect("golden samples");
        println!("{model}: runtime {steps}-step samples vs candle golden (unconditional and guided) {worst:.2e}");
        assert!(worst <= 1e-4, "{model}: {worst}");
    }
}

#[test]
fn four_step_student_matches_the_many_step_teacher() {
    let f = fixture();
    let (floor, gaussian) = f.dir.baselines();
    let (many, teacher_samples) = teacher_many();
    let (few, _) = quality(&f.teacher, "f32", 4);
    let (student, student_samples) = student4("f32");
    // Point by point the student's samples are the teacher's from the same noise.
    let stray = mean_distance(student_samples, teacher_samples);
    println!("student4 vs teacher DDIM {}: mean distance {stray:.4} per sample", many.steps);
    assert!(stray < 0.05, "{stray}");
    println!(
        "energy distance: teacher DDIM {} {:.5}, teacher DDIM 4 {:.5}, student 4 {:.5} (floor {floor:.5}, Gaussian {gaussian:.5})",
        many.steps, many.energy, few.energy, student.energy
    );
    assert!(many.energy < 0.2 * gaussian, "the teacher learnt the data: {} vs Gaussian {gaussian}", many.energy);
    assert!(
        student.energy <= 1.1 * many.energy,
        "student {} vs teacher at {} steps {}",
        student.energy,
        many.steps,
        many.energy
    );
    assert!(student.energy < 0.25 * few.energy, "student {} vs teacher at 4 steps {}", student.energy, few.energy);
    assert!(few.energy > 5.0 * many.energy, "4 undistilled steps are clearly worse: {} vs {}", few.energy, many.energy);
    // Cost: 4 calls instead of many.
    assert!(many.steps >= 64);
    assert_eq!(student.macs_per_sample * many.steps as u64, many.macs_per_sample * 4);
}

#[test]
fn two_and_one_step_students_beat_the_teacher_at_their_steps() {
    let f = fixture();
    for steps in [2usize, 1] {
        let file = f.dir.convert(&format!("student{steps}")).expect("convert");
        let (student, _) = quality(&file, "f32", steps);
        let (teacher, _) = quality(&f.teacher, "f32", steps);
        assert!(
            student.energy < 0.25 * teacher.energy,
            "{steps} steps: student {} teacher {}",
            student.energy,
            teacher.energy
        );
    }
}

#[test]
fn int8_student_stays_close_to_f32() {
    let ((f32r, f32s), (i8r, i8s)) = (student4("f32"), student4("int8"));
    let (many, _) = teacher_many();
    let stray = mean_distance(i8s, f32s);
    println!(
        "student4 energy distance: f32 {:.5}, int8 {:.5}; int8 vs f32 samples from the same noise: mean distance {stray:.4}",
        f32r.energy, i8r.energy
    );
    assert!(i8r.energy <= 1.25 * f32r.energy, "int8 {} vs f32 {}", i8r.energy, f32r.energy);
    assert!(i8r.energy <= 1.25 * many.energy, "int8 {} vs teacher {}", i8r.energy, many.energy);
    assert!(stray < 0.05, "int8 samples stray {stray} from the f32 ones");
    let fx = &fixture().student4.figures.file;
    let (flash8, arena8) = (fx.flash_int8.expect("int8"), fx.arena_int8.expect("int8"));
    println!(
        "student4 flash f32 {} int8 {flash8}; arena/lower bound int8 {arena8:?}, state {}",
        fx.flash_f32, fx.state
    );
    assert!(flash8 * 5 < fx.flash_f32 * 2, "int8 weights: {flash8} vs {}", fx.flash_f32);
    assert!(arena8.0 >= arena8.1 && arena8.1 > 0);
    // The sampler's slot: 5 f32 per value of x (64 rows × 2), plus the slot header.
    let x_values = fixture().dir.batch() * 2;
    assert!(fx.state >= mote::diffusion::SAMPLER_STATE_VALUES * 4 * x_values, "state {}", fx.state);
}

#[test]
fn guidance_raises_class_accuracy() {
    let f = fixture();
    let rows: Vec<GuidanceRow> =
        GUIDANCE_SCALES.iter().map(|&s| f.dir.guidance(&f.student4, 4, s).expect("guided samples").0).collect();
    for r in &rows {
        println!("student4 guidance {}: class accuracy {:.1}%, energy {:.5}", r.scale, 100.0 * r.accuracy, r.energy);
    }
    let acc: Vec<f64> = rows.iter().map(|r| r.accuracy).collect();
    assert_eq!(GUIDANCE_SCALES, [0.0, 1.0, 3.0]);
    assert!((acc[0] - 0.5).abs() < 0.1, "scale 0 is unconditional: {}", acc[0]);
    assert!(acc[1] > 0.95, "conditional samples land on their class: {}", acc[1]);
    assert!(acc[2] >= acc[1] && acc[2] > 0.98, "guidance: {acc:?}");
    assert!(f.dir.knn_accuracy_real() > 0.98, "the classifier separates real data");
}

fn session_of(bytes: &[u8], f: impl FnOnce(&mut Session<'_, '_>, usize)) {
    let model = Model::parse(bytes).expect("parse");
    let mut mem = Memory::for_model(&model);
    let mut s = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let e = model.entry_by_name("forward").expect("entry");
    let n = model.tensor(model.entry_input(e, 0).expect("x")).expect("x").desc.shape.numel();
    f(&mut s, n);
}

/// A tiny unconditional v-predictor (`v = 0.5·x`) with the teacher's schedule (and an explicit
/// step grid): inputs x, t.
fn unconditional_model(schedule: &str, grid: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut g = GraphBuilder::new("uncond");
    g.input("x", DataType::Float, &[Dim::Fixed(8), Dim::Fixed(2)]);
    g.input("t", DataType::Int64, &[Dim::Fixed(8)]);
    let half = g.const_f32_scalar(0.5);
    let v = g.op_named("Mul", &["x", &half], vec![], "v");
    g.output(&v, DataType::Float, &[Dim::Fixed(8), Dim::Fixed(2)]);
    g.metadata(SCHEDULE_KEY, schedule);
    g.metadata("mote.diffusion.prediction", "v");
    if let Some(grid) = grid {
        g.metadata(GRID_KEY, grid);
    }
    let path = scratch("ddpm2d").join(format!("uncond{}.onnx", grid.map_or(0, |g| g.len())));
    std::fs::write(&path, g.finish()).expect("write");
    let opts = Options {
        quant: QuantMode::F32,
        bounds: Default::default(),
        calibration: None,
        decode: false,
        extra_entries: vec![],
    };
    Ok(convert(&path, &opts)?.bytes)
}

#[test]
fn misuse_is_a_typed_error() {
    let f = fixture();
    let ddim = Method::Ddim { eta: 0.0 };
    let req = |steps, condition| Request { method: ddim, steps, seed: 1, condition };
    session_of(&f.student4.f32.bytes, |s, n| {
        let mut out = vec![0f32; n];
        let err = sample(s, &req(3, Condition::Unconditional), &mut out).expect_err("3 steps");
        match err {
            Error::UnsupportedSteps { supported } => {
                assert!(supported.contains(4) && !supported.contains(3));
                assert!(matches!(supported, StepCounts::Listed { len: 1, .. }));
                println!("student4 asked for 3 steps: {err}");
            }
            other => panic!("expected UnsupportedSteps, got {other:?}"),
        }
        for scale in [-0.5, 20.5, f32::NAN] {
            let e = sample(s, &req(4, Condition::Guided { class: 1, scale }), &mut out).expect_err("scale");
            assert_eq!(e, Error::GuidanceOutOfRange, "scale {scale}");
        }
        let e = sample(s, &req(4, Condition::Class(3)), &mut out).expect_err("class 3");
        assert_eq!(e, Error::IndexOutOfRange, "class past the null class");
        let mut short = vec![0f32; n - 2];
        assert_eq!(sample(s, &req(4, Condition::Unconditional), &mut short), Err(Error::SizeMismatch));
        sample(s, &req(4, Condition::Guided { class: 0, scale: 20.0 }), &mut out)
            .expect("the largest scale is allowed");
    });
    let schedule = f.dir.report.options.config.timesteps;
    let text = mote_converters::zoo::diffusion::Schedule::cosine(schedule).metadata();
    session_of(&unconditional_model(&text, None).expect("convert"), |s, n| {
        let mut out = vec![0f32; n];
        sample(s, &req(4, Condition::Unconditional), &mut out).expect("unconditional sampling works");
        assert!(out.iter().all(|v| v.is_finite()));
        for c in [Condition::Class(0), Condition::Guided { class: 0, scale: 2.0 }] {
            assert_eq!(sample(s, &req(4, c), &mut out), Err(Error::NoConditionalPath), "{c:?}");
        }
    });
}

#[test]
fn an_explicit_step_grid_reaches_the_runtime_sampler_and_a_bad_one_is_refused() {
    use mote_converters::zoo::diffusion::sampler::{self as host, Schedule};
    let host_schedule = Schedule::cosine(128).with_grid(&[127, 111, 87, 47]).expect("grid");
    let text = host_schedule.metadata();
    let bytes = unconditional_model(&text, host_schedule.grid_metadata().as_deref()).expect("convert");
    // The host sampler's DDIM run of the model's exact denoiser, v = 0.5·x, from the runtime's noise.
    let on_host = |schedule: &Schedule, steps: usize| {
        let mut x = host::initial_noise(16, 5);
        let mut half = |x: &[f32], _t: isize, _c: usize| Ok(x.iter().map(|v| 0.5 * v).collect());
        host::ddim_sample(&mut half, schedule, steps, &mut x, host::Condition::Unconditional, 0).expect("host sampler");
        x
    };
    let on_runtime = |steps: usize| {
        let mut got = Vec::new();
        session_of(&bytes, |s, n| {
            got = vec![0f32; n];
            let req =
                Request { method: Method::Ddim { eta: 0.0 }, steps, seed: 5, condition: Condition::Unconditional };
            sample(s, &req, &mut got).expect("runtime sampler");
        });
        got
    };
    let max_abs = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    for (steps, schedule) in [(4, &host_schedule), (2, &host_schedule), (8, &Schedule::cosine(128))] {
        let worst = max_abs(&on_runtime(steps), &on_host(schedule, steps));
        println!("{steps} steps on grid {:?}: runtime vs host max-abs {worst:.2e}", schedule.grid(steps));
        assert!(worst < 1e-4, "{steps} steps: {worst}");
    }
    let apart = max_abs(&on_runtime(4), &on_host(&Schedule::cosine(128), 4));
    assert!(apart > 1e-3, "the grid changed nothing: {apart}");
    for bad in ["127,130", "87,111", "x"] {
        let err = format!("{:#}", unconditional_model(&text, Some(bad)).expect_err(bad));
        assert!(
            err.contains("mote.diffusion.grid") && err.contains("strictly decreasing timesteps below 128"),
            "{err}"
        );
        println!("grid {bad}: {err}");
    }
}
