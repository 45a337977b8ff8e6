//! `mote zoo` for the autoregressive flows: `maf`, `iaf` (maximum likelihood) and `pwn` (an
//! IAF student distilled from the MAF teacher in the sibling folder `maf`).

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, ArFlowFigures, FamilyFigures};
use crate::report::bytes;
use crate::zoo::autoregressive::{self as ar, FlowKind, FlowReport, FlowTrainOptions};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// Which autoregressive flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArFamily {
    /// Masked autoregressive flow (one-pass density, sequential sampling).
    Maf,
    /// Inverse autoregressive flow trained by maximum likelihood (sequential density).
    Iaf,
    /// IAF student distilled from the MAF teacher (Parallel-WaveNet style).
    Pwn,
}

/// An autoregressive flow family.
pub struct Autoregressive(pub ArFamily);

impl ZooFamily for Autoregressive {
    fn name(&self) -> &'static str {
        match self.0 {
            ArFamily::Maf => "maf",
            ArFamily::Iaf => "iaf",
            ArFamily::Pwn => "pwn",
        }
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = FlowTrainOptions::for_family(self.name());
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = match self.0 {
            ArFamily::Maf => ar::train_flow(out, FlowKind::Maf, &opts)?,
            ArFamily::Iaf => ar::train_flow(out, FlowKind::Iaf, &opts)?,
            ArFamily::Pwn => {
                let teacher = out.parent().unwrap_or(Path::new(".")).join("maf");
                ar::train_distill(out, &teacher, &opts)
                    .with_context(|| format!("distilling the teacher in {} (train `maf` first)", teacher.display()))?
            }
        };
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: test NLL {:.4} nats/dim (Gaussian {:.4}), energy distance {:.4} (floor {:.4})",
            report.train_seconds,
            report.test_nll_per_dim,
            report.gaussian_nll_per_dim,
            report.energy_candle,
            report.energy_floor
        );
        publish(out, self.name(), &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, self.name(), &FlowReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_ar_flow(dir)?.summary())
    }
}

/// Converts both directions into one int8 `.mote`, measures it on the runtime, writes the card.
fn publish(dir: &Path, name: &str, r: &FlowReport) -> Result<()> {
    let converted = family::autoregressive::convert_ar_flow(dir, QuantMode::Int8)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_ar_flow(dir)?;
    std::fs::write(dir.join("figures.json"), serde_json::to_string_pretty(&figures)?)?;
    let mut section = card_section(&figures);
    section.push_str(&m4_section(dir, r)?);
    ar::write_flow_card(dir, r, &section)?;
    print!("{}", super::table(&[(name, &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// Instructions on the Cortex-M4 recorded in `m4.json` (copied from `mote flash --board
/// mps2-an386 <dir>/model.int8.mote`): `(forward, inverse)` per batch of `batch_rows`.
pub(super) fn m4_record(dir: &Path) -> Result<Option<(f64, f64, f64)>> {
    let p = dir.join("m4.json");
    if !p.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("{}: no number {k}", p.display()));
    Ok(Some((num("forward_instructions")?, num("inverse_instructions")?, num("batch_rows")?)))
}

/// The Cortex-M4 paragraph of the card (empty without `m4.json`).
fn m4_section(dir: &Path, r: &FlowReport) -> Result<String> {
    let Some((fwd, inv, rows)) = m4_record(dir)? else { return Ok(String::new()) };
    let mut s = format!(
        "\nOn the Cortex-M4 (`mote flash --board mps2-an386 {}/model.int8.mote`, QEMU, int8, size build, outputs \
         bit-exact with the host; figures recorded in `m4.json`): {:.0} k instructions per sample for `forward` and \
         {:.0} k for `inverse` ({:.1} M / {:.1} M per call of {rows} rows).",
        dir.display(),
        fwd / rows / 1e3,
        inv / rows / 1e3,
        fwd / 1e6,
        inv / 1e6
    );
    if let Some(d) = &r.distill {
        let teacher = dir.parent().unwrap_or(Path::new(".")).join(&d.teacher);
        if let Some((_, t_inv, t_rows)) = m4_record(&teacher)? {
            let _ = write!(
                s,
                " The teacher's sequential sampling costs {:.0} k instructions per sample: the student samples {:.2}× \
                 cheaper on the device.",
                t_inv / t_rows / 1e3,
                (t_inv / t_rows) / (inv / rows)
            );
        }
    }
    s.push('\n');
    Ok(s)
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &ArFlowFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh {}` (host runtime, scalar reference kernels) on `model.int8.mote` and a fresh \
         f32 conversion (`mote convert forward.onnx --entry inverse=inverse.onnx --dim n={}`). Entries: {}. \
         `runtime_samples.png`: held-out data (grey), f32 runtime samples (blue), int8 runtime samples (orange), \
         coordinates 0–1.\n",
        f.family,
        f.batch,
        f.entries.join(", ")
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let mut rows: Vec<(&str, String)> = vec![
        ("stored weights (both entries share them)", f.params.to_string()),
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        (
            "int8 arena / lower bound (n = batch rows)",
            format!("{} / {} (n = {})", bytes(f.arena_int8), bytes(f.lower_bound_int8), f.batch),
        ),
        ("MACs per sample: forward (density) / inverse (sampling)", format!("{} / {}", f.macs_forward, f.macs_inverse)),
        (
            "test NLL nats/dim: candle / f32 / int8 / fitted Gaussian",
            format!("{:.4} / {:.4} / {:.4} / {:.4}", f.nll_candle, f.nll_f32, f.nll_int8, f.baseline_nll),
        ),
        (
            "energy distance to held-out: f32 samples / int8 samples / Gaussian / data floor",
            format!("{:.4} / {:.4} / {:.4} / {:.4}", f.energy_f32, f.energy_int8, f.energy_baseline, f.energy_floor),
        ),
        (
            "max-abs of inverse(forward(x)) − x on the test set, f32 / int8",
            format!("{:.2e} / {:.2e}", f.invertibility_f32, f.invertibility_int8),
        ),
        ("f32 .mote vs tract (both entries), max-abs", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote log_prob vs candle, max-abs nats", format!("{:.2e}", f.log_prob_vs_candle_max_abs)),
        ("f32 .mote z and samples vs candle, max-abs", format!("{:.2e}", f.latent_vs_candle_max_abs)),
        (
            "masked-out weights stored as exact zeros",
            format!("{} of {}", f.masked_weights - f.masked_nonzero, f.masked_weights),
        ),
        (
            "layer 0 on the runtime (f32 + int8): z_i changed by x_j with i < j / dependencies reached",
            format!(
                "{} / {} of {}",
                f.autoregressive_violations, f.autoregressive_reached.0, f.autoregressive_reached.1
            ),
        ),
    ];
    if let Some(d) = &f.distill {
        rows.push((
            "sampling MACs per sample: teacher (sequential MAF inverse) / student (one pass) / ratio",
            format!("{} / {} / {:.2}×", d.teacher_sampling_macs, d.student_sampling_macs, d.sampling_speedup),
        ));
        rows.push((
            "energy distance: teacher samples f32 / int8 (student above)",
            format!("{:.4} / {:.4}", d.teacher_energy.0, d.teacher_energy.1),
        ));
        rows.push((
            "teacher NLL nats/dim of: test data / student samples / teacher samples",
            format!(
                "{:.4} / {:.4} / {:.4}",
                d.teacher_nll_f32, d.teacher_nll_of_student_samples, d.teacher_nll_of_teacher_samples
            ),
        ));
    }
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    if let Some(d) = &f.distill {
        let _ = writeln!(
            s,
            "\nThe student samples in one pass for {:.2}× fewer MACs than the teacher's sequential sampling ({} vs \
             {} per sample). Quality gap (f32 runtime): energy distance to held-out {:.4} vs the teacher's {:.4} \
             (two data samples: {:.4}); the teacher scores the student's samples at {:.4} nats/dim against {:.4} \
             for its own; the student's own density of the test set is {:.4} nats/dim against the teacher's {:.4} \
             (Gaussian {:.4}).",
            d.sampling_speedup,
            d.student_sampling_macs,
            d.teacher_sampling_macs,
            f.energy_f32,
            d.teacher_energy.0,
            f.energy_floor,
            d.teacher_nll_of_student_samples,
            d.teacher_nll_of_teacher_samples,
            f.nll_f32,
            d.teacher_nll_f32,
            f.baseline_nll
        );
    }
    s
}
