//! The runtime's diffusion samplers against a case with a known answer: the exact denoiser of
//! Gaussian data ([`mote_tests::gaussian_denoiser`]). Every sampler must produce samples with
//! the data's mean and standard deviation, up to its discretisation and sampling error, and
//! classes and guidance must move the mean as u + w·(c − u) says.

use mote::diffusion::{
    sample, Condition, Method, Request, Schedule, StepCounts, SAMPLER_SLOT, SAMPLER_STATE_VALUES, SCHEDULE_KEY,
    SCHEDULE_TENSOR,
};
use mote::{Error, Model, Session};
use mote_converters::host::Memory;
use mote_tests::gaussian_denoiser::{alpha_bar, convert_f32, onnx, Kind, MEAN, ROWS, STD, T};
use mote_tests::scratch;
use std::path::PathBuf;

fn gaussian_denoiser(kind: Kind, classes: bool) -> Vec<u8> {
    convert_f32(&gaussian_onnx(kind, classes, None, None)).expect("convert")
}

fn gaussian_onnx(kind: Kind, classes: bool, steps: Option<&str>, schedule: Option<&str>) -> PathBuf {
    onnx(&scratch("diffusion"), kind, classes, steps, schedule)
}

/// Mean and standard deviation per dimension over `runs` batches of samples.
fn moments(bytes: &[u8], method: Method, steps: usize, condition: Condition, runs: u64) -> ([f32; 2], [f32; 2]) {
    let model = Model::parse(bytes).expect("parse");
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let (mut sum, mut sq, mut n) = ([0f64; 2], [0f64; 2], 0.0);
    let mut x = vec![0f32; ROWS * 2];
    for seed in 0..runs {
        sample(&mut session, &Request { method, steps, seed, condition }, &mut x).expect("sample");
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

fn assert_moments(name: &str, (mean, std): ([f32; 2], [f32; 2]), want_mean: [f32; 2]) {
    println!("{name}: mean {mean:.3?} (want {want_mean:?}), std {std:.3?} (want {STD:?})");
    for d in 0..2 {
        assert!((mean[d] - want_mean[d]).abs() < 0.08, "{name}: mean {mean:?}");
        assert!((std[d] - STD[d]).abs() < 0.08, "{name}: std {std:?}");
    }
}

#[test]
fn every_sampler_recovers_the_data_distribution() {
    let bytes = gaussian_denoiser(Kind::Epsilon, false);
    let cases = [
        ("DDPM, 250 steps", Method::Ddpm, 250),
        ("DDIM eta 0, 50 steps", Method::Ddim { eta: 0.0 }, 50),
        ("DDIM eta 1, 100 steps", Method::Ddim { eta: 1.0 }, 100),
        ("Euler-Maruyama, 500 steps", Method::EulerMaruyama, 500),
        ("probability-flow ODE Euler, 200 steps", Method::ProbabilityFlow { heun: false }, 200),
        ("probability-flow ODE Heun, 25 steps", Method::ProbabilityFlow { heun: true }, 25),
    ];
    for (name, method, steps) in cases {
        assert_moments(name, moments(&bytes, method, steps, Condition::Unconditional, 16), MEAN);
    }
}

#[test]
fn v_and_sample_predictions_give_the_same_distribution() {
    for kind in [Kind::V, Kind::Sample] {
        let bytes = gaussian_denoiser(kind, false);
        for (name, method, steps) in [("DDIM", Method::Ddim { eta: 0.0 }, 50), ("DDPM", Method::Ddpm, 250)] {
            let got = moments(&bytes, method, steps, Condition::Unconditional, 16);
            assert_moments(&format!("{kind:?} prediction, {name} {steps} steps"), got, MEAN);
        }
    }
}

#[test]
fn classes_and_guidance_move_the_mean_as_the_formula_says() {
    // ε is linear in μ, so guided ε = ε_u + w·(ε_c − ε_u) is the exact ε of N(μ_u + w·(μ_c − μ_u), s²).
    let bytes = gaussian_denoiser(Kind::Epsilon, true);
    let ddim = Method::Ddim { eta: 0.0 };
    let cases = [
        ("class 0", Condition::Class(0), MEAN),
        ("class 1", Condition::Class(1), MEAN.map(|m| -m)),
        ("unconditional", Condition::Unconditional, [0.0; 2]),
        ("class 0 guided x2", Condition::Guided { class: 0, scale: 2.0 }, MEAN.map(|m| 2.0 * m)),
        ("class 1 guided x0.5", Condition::Guided { class: 1, scale: 0.5 }, MEAN.map(|m| -0.5 * m)),
    ];
    for (name, condition, want) in cases {
        assert_moments(name, moments(&bytes, ddim, 50, condition, 8), want);
    }
}

#[test]
fn the_sampler_keeps_its_values_in_the_state_region() {
    let bytes = gaussian_denoiser(Kind::Epsilon, false);
    let model = Model::parse(&bytes).expect("parse");
    let slot = (0..model.state_slot_count())
        .map(|i| model.state_slot(i).expect("slot"))
        .find(|s| model.string(s.name).ok() == Some(SAMPLER_SLOT))
        .expect("a sampler slot");
    assert!(slot.len as usize >= SAMPLER_STATE_VALUES * 4 * ROWS * 2, "slot of {} bytes", slot.len);
    assert!(model.state_bytes() >= (slot.offset + slot.len) as usize);
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let mut x = vec![0f32; ROWS * 2];
    let request = Request { method: Method::Ddim { eta: 0.0 }, steps: 4, seed: 3, condition: Condition::Unconditional };
    sample(&mut session, &request, &mut x).expect("sample");
    let state = session.state();
    let at = slot.offset as usize;
    let kept: Vec<f32> =
        state[at..at + 4 * x.len()].chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(kept, x, "the slot's first buffer holds the sample");
}

#[test]
fn samples_are_reproducible_and_bad_settings_are_typed_errors() {
    let bytes = gaussian_denoiser(Kind::Epsilon, false);
    let model = Model::parse(&bytes).expect("parse");
    assert_eq!(Schedule::of_model(&model).expect("schedule").len(), T);
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let run = |session: &mut Session, method, steps, seed, condition| {
        let mut x = vec![0f32; ROWS * 2];
        sample(session, &Request { method, steps, seed, condition }, &mut x).map(|_| x)
    };
    let free = Condition::Unconditional;
    let a = run(&mut session, Method::Ddpm, 20, 7, free).expect("sample");
    assert_eq!(a, run(&mut session, Method::Ddpm, 20, 7, free).expect("sample"), "same seed, same sample");
    assert_ne!(a, run(&mut session, Method::Ddpm, 20, 8, free).expect("sample"), "another seed");
    for steps in [0, T + 1] {
        let e = run(&mut session, Method::Ddpm, steps, 1, free).unwrap_err();
        assert_eq!(e, Error::UnsupportedSteps { supported: StepCounts::UpTo(T as u16) });
        assert_eq!(e.to_string(), "unsupported step count: this model samples with 1 to 1000 steps");
    }
    assert_eq!(run(&mut session, Method::Ddim { eta: 1.5 }, 10, 1, free).err(), Some(Error::BadParams));
    let e = run(&mut session, Method::Ddpm, 10, 1, Condition::Class(0)).unwrap_err();
    assert_eq!(e, Error::NoConditionalPath);
    assert!(e.to_string().contains("no conditional path"), "{e}");
    let e = run(&mut session, Method::Ddpm, 10, 1, Condition::Guided { class: 0, scale: 25.0 }).unwrap_err();
    assert_eq!(e, Error::GuidanceOutOfRange);
    assert!(e.to_string().contains("0..=20"), "{e}");
    let mut wrong = vec![0f32; 6];
    let request = Request { method: Method::Ddpm, steps: 10, seed: 1, condition: free };
    assert_eq!(sample(&mut session, &request, &mut wrong).err(), Some(Error::SizeMismatch));

    let conditional = gaussian_denoiser(Kind::Epsilon, true);
    let model = Model::parse(&conditional).expect("parse");
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    for class in [-1, 3] {
        let e = run(&mut session, Method::Ddpm, 10, 1, Condition::Class(class)).unwrap_err();
        assert_eq!(e, Error::IndexOutOfRange, "class {class}");
    }
    let e = run(&mut session, Method::Ddpm, 10, 1, Condition::Guided { class: 0, scale: -1.0 }).unwrap_err();
    assert_eq!(e, Error::GuidanceOutOfRange);
}

#[test]
fn distilled_step_counts_are_enforced_with_the_list() {
    let bytes = convert_f32(&gaussian_onnx(Kind::Epsilon, false, Some("4, 2,1"), None)).expect("convert");
    let model = Model::parse(&bytes).expect("parse");
    let mut mem = Memory::for_model(&model);
    let mut session = Session::new(&model, &mut mem.arena, &mut mem.state).expect("session");
    let mut x = vec![0f32; ROWS * 2];
    let mut request =
        Request { method: Method::Ddim { eta: 0.0 }, steps: 4, seed: 1, condition: Condition::Unconditional };
    for steps in [4, 2, 1] {
        request.steps = steps;
        sample(&mut session, &request, &mut x).expect("a listed step count");
    }
    request.steps = 8;
    let e = sample(&mut session, &request, &mut x).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSteps { .. }), "{e:?}");
    assert_eq!(e.to_string(), "unsupported step count: this model samples with 4, 2 or 1 steps");
    let line = mote_converters::report::inspect(&model).expect("inspect").diffusion.expect("a diffusion line");
    assert!(line.starts_with("1000 timesteps") && line.contains("samples with 4, 2 or 1 steps"), "{line}");
    assert!(line.contains("unconditional; sampler state 2.5 KiB"), "{line}");
}

#[test]
fn the_schedule_is_stored_as_a_weight_tensor_and_checked_at_conversion() {
    let bytes = gaussian_denoiser(Kind::Epsilon, false);
    let model = Model::parse(&bytes).expect("parse");
    assert_eq!(model.metadata(SCHEDULE_KEY), None, "the text form is not copied into the file");
    let id = (0..model.tensor_count() as u32)
        .map(mote::TensorId)
        .find(|&id| model.tensor_name(id) == Some(SCHEDULE_TENSOR))
        .expect("a schedule tensor");
    let view = model.weight_view(&model.tensor(id).expect("tensor")).expect("weights");
    let stored: Vec<f32> = (0..view.desc.shape.numel()).map(|i| view.get(i)).collect();
    assert_eq!(stored, alpha_bar(), "ᾱ stored exactly");
    for (bad, why) in [("0.9,1.5", "in (0, 1]"), ("0.9,x", "'x' is not a number")] {
        let e = convert_f32(&gaussian_onnx(Kind::Epsilon, false, None, Some(bad))).unwrap_err();
        assert!(format!("{e:#}").contains(why), "{bad}: {e:#}");
    }
}
