//! `mote zoo` for `ddpm2d`: train the teacher (`train`), distil it into 4-, 2- and 1-step
//! students (`distill`), convert the device file (the 4-step student, f32 and int8), measure
//! everything on the runtime's sampler, plot, and write the card with the acceptance table.

use super::{print_rounds, DistillSettings, TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, DiffusionFigures, FamilyFigures};
use crate::zoo::diffusion::card::write_card;
use crate::zoo::diffusion::{self as zd, DistillOptions, DistillReport, TeacherReport, TrainOptions};
use crate::zoo::toy2d::{scatter_panels_png, ScatterSet};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The 2-D class-conditional diffusion family.
pub struct Ddpm2d;

impl ZooFamily for Ddpm2d {
    fn name(&self) -> &'static str {
        "ddpm2d"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = TrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let r = zd::train_teacher(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&r)?)?;
        let energies: Vec<String> = r.energy_candle.iter().map(|(s, e)| format!("{s} steps {e:.5}")).collect();
        println!(
            "trained in {:.0} s: v-loss {:.4}; candle DDIM energy distance {} (floor {:.5})",
            r.train_seconds,
            r.final_train_loss,
            energies.join(", "),
            r.energy_floor
        );
        println!("next: `mote zoo distill ddpm2d --to 1` distils the few-step students");
        // A retrained teacher invalidates students distilled from the previous one.
        for n in zd::distill::EXPORTED {
            let _ = std::fs::remove_file(out.join(format!("student{n}.onnx")));
        }
        let _ = std::fs::remove_file(out.join("distill_report.json"));
        publish(out)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_ddpm2d_student(dir)?.summary())
    }

    fn distill(&self, dir: &Path, settings: &DistillSettings) -> Result<()> {
        let o = settings.apply(DistillOptions { to: settings.to, ..DistillOptions::default() });
        let r = zd::distill(dir, &o)?;
        print_rounds(&r);
        publish(dir)
    }
}

/// Converts the 4-step student (f32 and int8) when there is one, measures every file on the
/// runtime, plots and writes the card.
fn publish(dir: &Path) -> Result<()> {
    if dir.join("student4.onnx").exists() {
        for (quant, file) in [(QuantMode::F32, "student4.mote"), (QuantMode::Int8, "student4.int8.mote")] {
            let c =
                crate::convert::convert(&dir.join("student4.onnx"), &family::ddpm2d_options(dir, "student4", quant)?)?;
            std::fs::write(dir.join(file), &c.bytes)?;
        }
    }
    let f = family::evaluate_ddpm2d(dir)?;
    std::fs::write(dir.join("figures.json"), serde_json::to_string_pretty(&f)?)?;
    plots(dir, &f)?;
    let teacher = TeacherReport::read(dir)?;
    let distilled = DistillReport::read(dir).ok();
    write_card(dir, &teacher, distilled.as_ref(), &card_section(&f))?;
    print!("{}", acceptance_table(&f));
    print!("{}", super::table(&[("ddpm2d", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

const DATA: [u8; 3] = [31, 119, 180];
const MODEL: [u8; 3] = [214, 39, 40];
const OTHER: [u8; 3] = [44, 160, 44];

/// `samples.png`: one panel per sample set (held-out data first); `guidance.png`: class 0
/// (red) and class 1 (green) samples per model and guidance scale.
fn plots(dir: &Path, f: &DiffusionFigures) -> Result<()> {
    let sets: Vec<Vec<ScatterSet<'_>>> =
        f.plots.iter().enumerate().map(|(i, (_, p))| vec![(p.as_slice(), if i == 0 { DATA } else { MODEL })]).collect();
    let panels: Vec<&[ScatterSet<'_>]> = sets.iter().map(|s| s.as_slice()).collect();
    scatter_panels_png(&dir.join("samples.png"), &panels, 200, 3.0)?;
    if !f.guided_plots.is_empty() {
        let sets: Vec<Vec<ScatterSet<'_>>> =
            f.guided_plots.iter().map(|(_, a, b)| vec![(a.as_slice(), MODEL), (b.as_slice(), OTHER)]).collect();
        let panels: Vec<&[ScatterSet<'_>]> = sets.iter().map(|s| s.as_slice()).collect();
        scatter_panels_png(&dir.join("guidance.png"), &panels, 200, 3.0)?;
    }
    Ok(())
}

/// The acceptance verdicts, measured.
fn verdicts(f: &DiffusionFigures) -> String {
    let e = |m: &str, p: &str, n: usize| f.row(m, p, n).map(|r| r.energy);
    let mut out = Vec::new();
    if let (Some(s4), Some(t4)) = (e("student4", "f32", 4), e("teacher", "f32", 4)) {
        let many: Vec<String> = [f.timesteps, f.timesteps / 2]
            .iter()
            .filter_map(|&n| e("teacher", "f32", n).map(|t| format!("{:.1}% of the teacher's at {n}", 100.0 * s4 / t)))
            .collect();
        out.push(format!(
            "The 4-step student's energy distance is {} DDIM steps (acceptance: within 10%), and {:.1}% of the \
             undistilled teacher's at 4 steps.",
            many.join(" and "),
            100.0 * s4 / t4
        ));
        if let Some(i8) = e("student4", "int8", 4) {
            out.push(format!("int8 / f32 for the 4-step student: {:.2}.", i8 / s4));
        }
    }
    out.push(format!(
        "All good models sit near the metric's floor ({:.5}, two independent draws of the data): the energy distance \
         cannot resolve differences much below ~1e-4 with {} samples; the last column (distance to the teacher's \
         sample from the same noise) shows what distillation and quantisation change point by point.",
        f.energy_floor,
        family::ddpm2d::QUALITY_SAMPLES
    ));
    out.join(" ")
}

/// The acceptance table as plain text (for the terminal).
fn acceptance_table(f: &DiffusionFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>5} {:>5} {:>6} {:>12} {:>10} {:>10}",
        "model", "prec", "meth", "steps", "MACs/sample", "energy", "vs teacher"
    );
    for r in &f.quality {
        let _ = writeln!(
            s,
            "{:<10} {:>5} {:>5} {:>6} {:>12} {:>10.5} {:>10.4}",
            r.model, r.precision, r.method, r.steps, r.macs_per_sample, r.energy, r.vs_teacher
        );
    }
    let _ = writeln!(s, "floor (fresh data) {:.5}; Gaussian fit {:.5}", f.energy_floor, f.energy_gaussian);
    for g in &f.guidance {
        let _ = writeln!(
            s,
            "{} {} steps, guidance {}: class accuracy {:.1}%, energy {:.5}",
            g.model,
            g.steps,
            g.scale,
            100.0 * g.accuracy,
            g.energy
        );
    }
    s
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &DiffusionFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh ddpm2d` with `mote::diffusion::sample` on the host (scalar reference \
         kernels): {} samples per row in batches of n = {} rows, batch k seeded {} + k (every row starts from the \
         same noise), against the {} held-out points of `data/test.npy`.\n",
        family::ddpm2d::QUALITY_SAMPLES,
        f.batch,
        crate::zoo::diffusion::train::SAMPLE_SEED,
        f.test_points
    );
    let _ = writeln!(
        s,
        "| model | precision | sampler | steps | MACs / sample | energy distance ↓ | mean distance to the teacher's \
         DDIM {} sample (same noise) |\n|---|---|---|---|---|---|---|",
        f.reference_steps
    );
    for r in &f.quality {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.5} | {:.4} |",
            r.model, r.precision, r.method, r.steps, r.macs_per_sample, r.energy, r.vs_teacher
        );
    }
    let _ = writeln!(s, "| fresh draw of the data (floor) | | | | | {:.5} | |", f.energy_floor);
    let _ = writeln!(s, "| Gaussian fitted to the training data | | | | | {:.5} | |\n", f.energy_gaussian);
    let _ = writeln!(s, "{}\n", verdicts(f));
    let _ = writeln!(
        s,
        "![samples](samples.png)\n\n`samples.png`, left to right: {} (window [-3, 3]²).\n",
        f.plots.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "### Classifier-free guidance\n");
    let _ = writeln!(
        s,
        "{} samples of each class per row (`Condition::Guided`, DDIM; scale 0 is the unconditional model, 1 the \
         conditional one). Class accuracy: the fraction that a 15-nearest-neighbour classifier fitted on the \
         labelled training data assigns to the class asked for (it classifies the held-out data {:.1}% right).\n",
        family::ddpm2d::GUIDANCE_SAMPLES,
        100.0 * f.knn_accuracy_real
    );
    let _ = writeln!(
        s,
        "| model | steps | guidance scale | class accuracy | energy distance (both classes) |\n|---|---|---|---|---|"
    );
    for g in &f.guidance {
        let _ =
            writeln!(s, "| {} | {} | {} | {:.1}% | {:.5} |", g.model, g.steps, g.scale, 100.0 * g.accuracy, g.energy);
    }
    let _ = writeln!(
        s,
        "\nStrong guidance trades diversity for class fidelity: at scale 3 the samples are pushed away from the other \
         class, onto the outer half of their moon, so their energy distance to the (class-balanced) data grows while \
         the accuracy stays at its maximum.\n"
    );
    let _ = writeln!(
        s,
        "![guidance](guidance.png)\n\n`guidance.png`: class 0 (red) and class 1 (green) samples, left to right: {}.\n",
        f.guided_plots.iter().map(|(l, _, _)| l.as_str()).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "### Files, memory and parity\n");
    let _ = writeln!(
        s,
        "Every file converts with `--dim n={}` (one call denoises {} rows); the runtime keeps the sampler's working \
         values ({} f32 per value of x) in the state region. The committed device files are `student4.mote` and \
         `student4.int8.mote` (up to date with a fresh conversion: {} / {}); the runtime's 4-step samples of \
         `student4.mote` match candle's golden samples (`golden/student4.sample.npy`, `.guided.npy`, seed {}) to \
         {:.1e}.\n",
        f.batch,
        f.batch,
        mote::diffusion::SAMPLER_STATE_VALUES,
        f.committed_up_to_date.0,
        f.committed_up_to_date.1,
        crate::zoo::diffusion::train::GOLDEN_SEED,
        f.golden_samples_max_abs
    );
    let _ = writeln!(s, "| file | steps | flash f32 / int8 | arena / lower bound f32 | arena / lower bound int8 | state | MACs / call | vs tract | vs candle |\n|---|---|---|---|---|---|---|---|---|");
    for x in &f.files {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1e} | {:.1e} |",
            x.file.cells(),
            x.macs_per_call,
            x.f32_vs_tract_max_abs,
            x.f32_vs_candle_max_abs
        );
    }
    s
}
