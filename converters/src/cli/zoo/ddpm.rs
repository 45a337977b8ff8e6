//! `mote zoo` for `ddpm` (the UNet on glyphs): train the teacher, distil it into 4-, 2- and
//! 1-step students, convert the device files (`teacher.mote`, `student4.mote`, `student1.mote`,
//! one image per call, f32 and int8), measure them on the runtime's sampler, run the 4- and
//! 1-step students on the QEMU Cortex-M4 when the toolchain is there and write the card.

use super::{print_rounds, DistillSettings, TrainSettings, ZooFamily};
use crate::family::ddpm::{
    convert_device, evaluate_ddpm, DdpmFigures, DEVICE_RUNS, RUNTIME_GUIDED_PER_CLASS, RUNTIME_SAMPLES,
};
use crate::family::m4::{self, M4Figures};
use crate::report::bytes;
use crate::zoo::diffusion::DistillReport;
use crate::zoo::unet::card::write_card;
use crate::zoo::unet::distill::{ddpm_distill_options, distill};
use crate::zoo::unet::sampling::to_pixels;
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

    fn distill(&self, dir: &Path, settings: &DistillSettings) -> Result<()> {
        let o = settings.apply(ddpm_distill_options(settings.to));
        let r = distill(dir, &o)?;
        print_rounds(&r);
        publish(dir)
    }

    fn evaluate(&self, dir: &Path) -> Result<crate::family::FamilyFigures> {
        Ok(evaluate_ddpm(dir, report_model(dir), false)?.summary())
    }
}

/// The denoisers published as device files (`<model>.mote`, `<model>.int8.mote`) when their
/// ONNX exists: the teacher and the 4- and 1-step students.
const DEVICE_MODELS: [&str; 3] = ["teacher", "student4", "student1"];
/// Every denoiser measured on the runtime (f32 and int8 quality) when its ONNX exists, in the
/// card's order; only [`DEVICE_MODELS`] keep their device files.
const MEASURED: [&str; 4] = ["teacher", "student4", "student2", "student1"];

/// The family's report row comes from this denoiser: the 4-step student once distilled.
fn report_model(dir: &Path) -> &'static str {
    if dir.join("student4.onnx").exists() {
        "student4"
    } else {
        "teacher"
    }
}

/// Converts the device files (f32 always, int8 when within [`INT8_ENERGY_RATIO`]), measures
/// every denoiser on the runtime, plots and writes the card.
fn publish(dir: &Path) -> Result<()> {
    let mut all: Vec<(DdpmFigures, f64)> = Vec::new();
    for model in MEASURED {
        if !dir.join(format!("{model}.onnx")).exists() {
            continue;
        }
        let device = DEVICE_MODELS.contains(&model);
        if device {
            let (f32m, i8m) = convert_device(dir, model)?;
            std::fs::write(dir.join(format!("{model}.mote")), &f32m.bytes)?;
            std::fs::write(dir.join(format!("{model}.int8.mote")), &i8m.bytes)?;
        }
        let f = evaluate_ddpm(dir, model, device)?;
        let ratio = f.quality_int8.energy[1] / f.quality_f32.energy[1];
        if device && ratio > INT8_ENERGY_RATIO {
            std::fs::remove_file(dir.join(format!("{model}.int8.mote")))?;
            println!(
                "{model}: int8 not committed, energy distance {ratio:.2}× the f32 file's (bound {INT8_ENERGY_RATIO})"
            );
        }
        all.push((f, ratio));
    }
    let figures: Vec<&DdpmFigures> = all.iter().map(|(f, _)| f).collect();
    std::fs::write(dir.join("figures.json"), serde_json::to_string_pretty(&figures)?)?;
    let n = |f: &DdpmFigures| 48.min(f.samples_f32.len() / PIXELS) * PIXELS;
    let panels: Vec<&[f32]> = all
        .iter()
        .filter(|(f, _)| DEVICE_MODELS.contains(&f.model.as_str()))
        .flat_map(|(f, _)| [&f.samples_f32[..n(f)], &f.samples_int8[..n(f)]])
        .collect();
    grid_png(&dir.join("runtime_samples.png"), &panels, 8, 2)?;
    let mut t = TeacherReport::read(dir)?;
    t.macs_per_call = all.first().map(|(f, _)| f.macs_per_call);
    std::fs::write(dir.join("train_report.json"), serde_json::to_string_pretty(&t)?)?;
    let mut section = String::new();
    for (f, ratio) in all.iter().filter(|(f, _)| DEVICE_MODELS.contains(&f.model.as_str())) {
        section.push_str(&card_section(f, *ratio));
    }
    section.push_str(&students_section(&figures));
    section.push_str("## On a Cortex-M4 (QEMU)\n\n");
    for run in &DEVICE_RUNS {
        section.push_str(&m4_section(dir, run, m4::refresh(dir, run, &to_pixels)?.as_ref()));
    }
    write_card(dir, &t, DistillReport::read(dir).ok().as_ref(), &section)?;
    print!("{section}");
    let row = all.iter().find(|(f, _)| f.model == report_model(dir)).map(|(f, _)| f.summary());
    if let Some(row) = row {
        print!("{}", super::table(&[("ddpm", &row)]));
    }
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card table of every denoiser's runtime sample quality at its own step count.
fn students_section(figures: &[&DdpmFigures]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Every denoiser on the runtime\n");
    let _ = writeln!(
        s,
        "Energy distance in local features of {RUNTIME_SAMPLES} unconditional runtime DDIM samples to as many \
         held-out glyphs (same seeds for every row; lower is better). The teacher row is the undistilled model at \
         the student's budget.\n"
    );
    let _ = writeln!(s, "| denoiser | steps | MACs / sample | f32 | int8 |\n|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4} | {:.4} |",
            f.model,
            f.steps,
            f.macs_per_call * f.steps as u64,
            f.quality_f32.energy[1],
            f.quality_int8.energy[1]
        );
    }
    let _ = writeln!(
        s,
        "\n![runtime samples](runtime_samples.png)\n\n`runtime_samples.png`: the first 48 unconditional runtime \
         samples of each device file (teacher with 4 DDIM steps, then the 4-step and the 1-step student), \
         f32 | int8 from the same noise.\n"
    );
    s
}

/// The card paragraph of one Cortex-M4 run.
fn m4_section(dir: &Path, run: &m4::DeviceRun, device: Option<&M4Figures>) -> String {
    let mut s = String::new();
    let Some(m) = device else {
        let _ = writeln!(
            s,
            "`{}`: not measured yet; install the firmware toolchain (`.ci/setup-toolchain.sh`) and run `mote zoo \
             refresh ddpm`.\n",
            run.command()
        );
        return s;
    };
    let _ = writeln!(
        s,
        "`{}`{}: one guided {}-step sample ({} denoiser calls) takes {:.1} M instructions ({:.1} M per call); {}\n\n\
         ![device]({pic})\n\n`{pic}`: the glyph the device drew (class {}).\n",
        m.command,
        m.staleness(dir, run),
        run.steps,
        2 * run.steps,
        m.sample_instructions / 1e6,
        m.forward_instructions / 1e6,
        m.footprint(),
        run.class,
        pic = run.picture_file(),
    );
    s
}

/// The card section of the runtime measurements.
pub fn card_section(f: &DdpmFigures, int8_ratio: f64) -> String {
    let mut s = String::new();
    let m = &f.model;
    let _ = writeln!(s, "## On the mote runtime: `{m}`\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh ddpm` through the converter and `mote::diffusion::sample` on the host \
         (scalar reference kernels). The device file `{m}.mote` denoises n = {} image per call; the sampler \
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
        "| MACs per {}-step sample (unguided / guided) | {} / {} |",
        f.steps,
        f.steps as u64 * f.macs_per_call,
        2 * f.steps as u64 * f.macs_per_call
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
        "| runtime {}-step samples vs candle's golden samples (unconditional and guided 3, max-abs) | {:.1e} |",
        f.steps, f.golden_samples_max_abs
    );
    let q = |r: &crate::zoo::unet::evaluate::QualityRow| {
        format!("{:.4} / {:.4} ({:.0} s)", r.energy[1], r.energy[0], r.seconds)
    };
    let _ = writeln!(
        s,
        "| energy distance, local / pixels, {RUNTIME_SAMPLES} runtime samples, DDIM {}: f32 | {} |",
        f.steps,
        q(&f.quality_f32)
    );
    let _ = writeln!(s, "|   int8 (same noise) | {} |", q(&f.quality_int8));
    if let Some(r) = &f.quality_f32_2 {
        let _ = writeln!(s, "|   f32, DDIM 2 | {} |", q(r));
    }
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "| class accuracy, DDIM {}, guidance {} ({RUNTIME_GUIDED_PER_CLASS} per class, f32) | {:.1}% |",
            f.steps,
            g.scale,
            100.0 * g.accuracy
        );
    }
    let _ = writeln!(
        s,
        "| committed {m}.mote / {m}.int8.mote equal a fresh conversion | {} / {} |\n",
        f.committed_up_to_date.0, f.committed_up_to_date.1
    );
    let _ = writeln!(
        s,
        "int8 bound: the int8 file is committed when its samples' local-feature energy distance is at most \
         {INT8_ENERGY_RATIO}× the f32 file's from the same noise; measured {int8_ratio:.2}×{}.\n",
        if int8_ratio <= INT8_ENERGY_RATIO { "" } else { " (not committed)" }
    );
    s
}
