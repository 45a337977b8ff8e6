//! `mote zoo` for `ddpm` (the UNet on glyphs): train the teacher, convert the device file
//! (`teacher.mote`, one image per call, f32 and int8), measure it on the runtime's sampler and
//! write the card.

use super::{TrainSettings, ZooFamily};
use crate::family::ddpm::{convert_device, evaluate_ddpm, DdpmFigures, RUNTIME_GUIDED_PER_CLASS, RUNTIME_SAMPLES};
use crate::report::bytes;
use crate::zoo::unet::card::write_card;
use crate::zoo::unet::train::{train_teacher, TeacherReport, TrainOptions};
use crate::zoo::vae::glyphs::grid_png;
use crate::zoo::vae::PIXELS;
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// int8 is committed when its 4-step runtime samples' local-feature energy distance is at
/// most this multiple of the f32 file's (same noise).
pub const INT8_ENERGY_RATIO: f64 = 1.5;

/// The UNet diffusion family.
pub struct Ddpm;

impl ZooFamily for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = TrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let (_, r) = train_teacher(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&r)?)?;
        let rows: Vec<String> =
            r.candle.quality.iter().map(|q| format!("{} {} {:.4}", q.method, q.steps, q.energy[1])).collect();
        println!(
            "trained in {:.0} s ({:.2} s/step): v-loss {:.4}; candle energy distance (local) {} (floor {:.4})",
            r.train_seconds,
            r.seconds_per_step,
            r.final_train_loss,
            rows.join(", "),
            r.candle.baselines.floor[1]
        );
        publish(out)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir)
    }

    fn evaluate(&self, dir: &Path) -> Result<crate::family::FamilyFigures> {
        Ok(evaluate_ddpm(dir, false)?.summary())
    }
}

/// Converts the device file (f32 always, int8 when within [`INT8_ENERGY_RATIO`]), measures it
/// on the runtime, plots and writes the card.
fn publish(dir: &Path) -> Result<()> {
    let (f32m, i8m) = convert_device(dir, "teacher")?;
    std::fs::write(dir.join("teacher.mote"), &f32m.bytes)?;
    std::fs::write(dir.join("teacher.int8.mote"), &i8m.bytes)?;
    let f = evaluate_ddpm(dir, true)?;
    let ratio = f.quality_int8.energy[1] / f.quality_f32.energy[1];
    if ratio > INT8_ENERGY_RATIO {
        std::fs::remove_file(dir.join("teacher.int8.mote"))?;
        println!("int8 not committed: energy distance {ratio:.2}× the f32 file's (bound {INT8_ENERGY_RATIO})");
    }
    std::fs::write(dir.join("figures.json"), serde_json::to_string_pretty(&f)?)?;
    let n = 48.min(f.samples_f32.len() / PIXELS) * PIXELS;
    grid_png(&dir.join("runtime_samples.png"), &[&f.samples_f32[..n], &f.samples_int8[..n]], 8, 2)?;
    let mut t = TeacherReport::read(dir)?;
    t.macs_per_call = Some(f.macs_per_call);
    std::fs::write(dir.join("train_report.json"), serde_json::to_string_pretty(&t)?)?;
    write_card(dir, &t, &card_section(&f, ratio))?;
    print!("{}", card_section(&f, ratio));
    print!("{}", super::table(&[("ddpm", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section of the runtime measurements.
pub fn card_section(f: &DdpmFigures, int8_ratio: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh ddpm` through the converter and `mote::diffusion::sample` on the host \
         (scalar reference kernels). The device file `teacher.mote` denoises n = {} image per call; the sampler \
         keeps its working values ({} f32 per pixel) in the state region.\n",
        f.batch,
        mote::diffusion::SAMPLER_STATE_VALUES
    );
    let ops: Vec<String> = f.ops.iter().map(|(o, k)| format!("{o} ×{k}")).collect();
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ = writeln!(s, "| stored parameters (f32 file, with the fixed timestep table) | {} |", f.params);
    let _ = writeln!(s, "| MACs per denoiser call (`mote inspect`) | {} |", f.macs_per_call);
    let _ = writeln!(
        s,
        "| MACs per 4-step sample (unguided / guided) | {} / {} |",
        4 * f.macs_per_call,
        8 * f.macs_per_call
    );
    let _ = writeln!(s, "| flash: f32 / int8 | {} / {} |", bytes(f.flash.0), bytes(f.flash.1));
    let _ = writeln!(
        s,
        "| arena / lower bound: f32 · int8 | {} / {} · {} / {} |",
        bytes(f.arena_f32.0),
        bytes(f.arena_f32.1),
        bytes(f.arena_int8.0),
        bytes(f.arena_int8.1)
    );
    let _ = writeln!(s, "| state (sampler slot) | {} |", bytes(f.state));
    let _ = writeln!(s, "| ops (f32 file) | {} |", ops.join(", "));
    let _ = writeln!(s, "| int8 file: ops reading int8 | {} |", f.int8_ops);
    let _ = writeln!(
        s,
        "| f32 vs tract · f32 vs candle, max-abs (golden batch) | {:.1e} · {:.1e} |",
        f.f32_vs_tract_max_abs, f.f32_vs_candle_max_abs
    );
    let _ = writeln!(
        s,
        "| int8 vs f32, max-abs (golden batch; largest \\|v\\| {:.2}) | {:.3} |",
        f.int8_vs_f32.1, f.int8_vs_f32.0
    );
    let _ = writeln!(
        s,
        "| runtime 4-step samples vs candle's golden samples (unconditional and guided 3, max-abs) | {:.1e} |",
        f.golden_samples_max_abs
    );
    let q = |r: &crate::zoo::unet::evaluate::QualityRow| {
        format!("{:.4} / {:.4} ({:.0} s)", r.energy[1], r.energy[0], r.seconds)
    };
    let _ = writeln!(
        s,
        "| energy distance, local / pixels, {RUNTIME_SAMPLES} runtime samples, DDIM 4: f32 | {} |",
        q(&f.quality_f32)
    );
    let _ = writeln!(s, "|   int8 (same noise) | {} |", q(&f.quality_int8));
    if let Some(r) = &f.quality_f32_2 {
        let _ = writeln!(s, "|   f32, DDIM 2 | {} |", q(r));
    }
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "| class accuracy, DDIM 4, guidance {} ({RUNTIME_GUIDED_PER_CLASS} per class, f32) | {:.1}% |",
            g.scale,
            100.0 * g.accuracy
        );
    }
    let _ = writeln!(
        s,
        "| committed teacher.mote / teacher.int8.mote equal a fresh conversion | {} / {} |\n",
        f.committed_up_to_date.0, f.committed_up_to_date.1
    );
    let _ = writeln!(
        s,
        "int8 bound: the int8 file is committed when its 4-step samples' local-feature energy distance is at most \
         {INT8_ENERGY_RATIO}× the f32 file's from the same noise; measured {int8_ratio:.2}×{}.\n",
        if int8_ratio <= INT8_ENERGY_RATIO { "" } else { " (not committed)" }
    );
    let _ = writeln!(
        s,
        "![runtime samples](runtime_samples.png)\n\n`runtime_samples.png`: the first 48 unconditional runtime \
         samples (DDIM 4), f32 | int8 from the same noise.\n"
    );
    s
}
