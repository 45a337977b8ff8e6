//! How much the `ddpm` acceptance ratio (4-step student over the 64-step DDIM teacher, energy
//! distance in local features of 512 unconditional candle samples to the 512 held-out glyphs)
//! moves with the sampling noise: the card's figure uses seed set 0; this draws three more.
//!
//! `cargo run --release -p mote-converters --example ddpm_seed_spread` (about 6 minutes on two
//! cores), from the repository root.

use mote_converters::import::OnnxModel;
use mote_converters::zoo::diffusion::sampler::{Condition, Schedule};
use mote_converters::zoo::diffusion::train::SAMPLE_SEED;
use mote_converters::zoo::unet::sampling::{candle_samples, to_pixels, Method};
use mote_converters::zoo::unet::train::TeacherReport;
use mote_converters::zoo::unet::UNet;
use mote_converters::zoo::vae::train::energies;
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let dir = Path::new("models/ddpm");
    let tr = TeacherReport::read(dir)?;
    let cfg = tr.options.config;
    let s = Schedule::cosine(cfg.timesteps);
    let test = tr.options.test_set();
    let n = 512;
    let test = &test.images[..n * 256];
    let teacher = UNet::load_onnx(cfg, &dir.join("teacher.onnx"))?;
    let student = UNet::load_onnx(cfg, &dir.join("student4.onnx"))?;
    // The student steps on the grid its file names (an explicit grid when it was distilled onto one).
    let student_schedule = Schedule::from_metadata(&OnnxModel::load(&dir.join("student4.onnx"))?.metadata())?;
    let mut sums = (0.0, 0.0);
    for k in 0..4u64 {
        let seed = SAMPLE_SEED + 100_000 * k;
        let e = |m: &UNet, s: &Schedule, steps| -> anyhow::Result<f64> {
            let smp = candle_samples(m, s, Method::Ddim, steps, Condition::Unconditional, n, seed)?;
            Ok(energies(&to_pixels(&smp), test)[1])
        };
        let (t, st) = (e(&teacher, &s, 64)?, e(&student, &student_schedule, 4)?);
        println!("seed set {k}: teacher DDIM64 {t:.4}, student4 {st:.4}, ratio {:.3}", st / t);
        sums = (sums.0 + t, sums.1 + st);
    }
    println!("pooled: teacher {:.4}, student4 {:.4}, ratio {:.3}", sums.0 / 4.0, sums.1 / 4.0, sums.1 / sums.0);
    Ok(())
}
