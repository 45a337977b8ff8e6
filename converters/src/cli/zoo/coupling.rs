//! `mote zoo` for the coupling normalizing flows (NICE, RealNVP): train, convert both
//! directions into one `.mote` (f32 and int8), measure on the runtime, plot, write the card.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, FlowFigures};
use crate::report::bytes;
pub use crate::zoo::coupling::CouplingKind;
use crate::zoo::coupling::{self as zc, FlowReport, FlowTrainOptions};
use crate::zoo::toy2d::{scatter_panels_png, ScatterSet};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// A coupling flow family.
pub struct Coupling(pub CouplingKind);

impl ZooFamily for Coupling {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = FlowTrainOptions::new(self.0);
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = zc::train_flow(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: test NLL {:.4} nats/dim (Gaussian {:.4}); energy distance {:.5} (Gaussian {:.5}, \
             floor {:.5})",
            report.train_seconds,
            report.test_nll,
            report.baseline_nll,
            report.energy_candle,
            report.energy_baseline,
            report.energy_floor
        );
        publish(out, self.0, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, self.0, &FlowReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_flow(dir, self.0)?.summary())
    }
}

/// Converts both directions (f32 and int8), measures them on the runtime, plots, writes the card.
fn publish(dir: &Path, kind: CouplingKind, r: &FlowReport) -> Result<()> {
    let fwd = dir.join("forward.onnx");
    for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
        let converted = crate::convert::convert(&fwd, &family::flow_options(dir, quant)?)?;
        std::fs::write(dir.join(file), &converted.bytes)?;
    }
    let f = family::evaluate_flow(dir, kind)?;
    plots(dir, &f)?;
    zc::write_flow_card(dir, r, &card_section(&f))?;
    print!("{}", super::table(&[(kind.name(), &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// `samples.png` (held-out data | f32 samples | int8 samples | Gaussian baseline samples) and
/// `latent.png` (the test set mapped to z by the f32 file | N(0, I) latents); the planar flow
/// draws the same plots.
pub(super) fn plots(dir: &Path, f: &FlowFigures) -> Result<()> {
    const DATA: [u8; 3] = [31, 119, 180];
    const MODEL: [u8; 3] = [214, 39, 40];
    const BASE: [u8; 3] = [127, 127, 127];
    let panels: [&[ScatterSet<'_>]; 4] =
        [&[(&f.test, DATA)], &[(&f.samples_f32, MODEL)], &[(&f.samples_int8, MODEL)], &[(&f.samples_baseline, BASE)]];
    scatter_panels_png(&dir.join("samples.png"), &panels, 256, 3.0)?;
    let prior = crate::zoo::coupling::train::latents(f.test.len(), crate::zoo::coupling::train::LATENT_SEED);
    let panels: [&[ScatterSet<'_>]; 2] = [&[(&f.latents_f32, DATA)], &[(&prior, BASE)]];
    scatter_panels_png(&dir.join("latent.png"), &panels, 256, 4.0)
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &FlowFigures) -> String {
    let file = &f.file;
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo refresh` / `mote zoo report` (host runtime, scalar reference kernels) on the \
         {} held-out points of `data/test.npy`, in batches of n = {}. Samples are `inverse` of latents drawn \
         by `mote::rng::Rng::gaussian`. Entries of `model.mote`: {}.\n",
        f.test_points,
        file.batch,
        file.entries.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let rows: [(&str, String); 12] = [
        ("parameters (stored once, shared by both entries)", file.params.to_string()),
        (
            "flash: f32 / int8 / f32 as two separate files",
            format!("{} / {} / {}", bytes(file.flash_f32), bytes(file.flash_int8), bytes(file.flash_f32_separate)),
        ),
        (
            "arena / lower bound: f32 / int8 (peak over entries)",
            format!(
                "{} / {} · {} / {}",
                bytes(file.arena_f32),
                bytes(file.lower_bound_f32),
                bytes(file.arena_int8),
                bytes(file.lower_bound_int8)
            ),
        ),
        (
            "MACs per call of n points: forward / inverse (per point)",
            format!(
                "{} / {} ({} / {})",
                file.macs_forward,
                file.macs_inverse,
                file.macs_forward / file.batch.max(1) as u64,
                file.macs_inverse / file.batch.max(1) as u64
            ),
        ),
        (
            "test NLL nats/dim: candle / f32 / int8 / Gaussian baseline",
            format!("{:.4} / {:.4} / {:.4} / {:.4}", f.nll_candle, f.nll_f32, f.nll_int8, f.baseline_nll),
        ),
        (
            "energy distance to held-out: f32 / int8 / Gaussian samples / fresh data (floor)",
            format!("{:.5} / {:.5} / {:.5} / {:.5}", f.energy_f32, f.energy_int8, f.energy_baseline, f.energy_floor),
        ),
        ("max abs inverse(forward(x)) − x, f32", format!("{:.1e}", f.invertibility_f32)),
        (
            "max / mean abs inverse(forward(x)) − x, int8",
            format!("{:.1e} / {:.1e}", f.invertibility_int8, f.invertibility_int8_mean),
        ),
        ("f32 log_prob vs candle, max-abs nats (golden)", format!("{:.1e}", file.log_prob_vs_candle_max_abs)),
        ("f32 z and samples vs candle, max-abs (golden)", format!("{:.1e}", file.latent_vs_candle_max_abs)),
        ("f32 .mote vs tract, max-abs (golden, both entries)", format!("{:.1e}", file.f32_vs_tract_max_abs)),
        (
            "committed model.mote / model.int8.mote equal a fresh conversion",
            format!("{} / {}", file.committed_f32_up_to_date, file.committed_int8_up_to_date),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\nThe energy distance is Székely's E-statistic `2E|X−Y| − E|X−X'| − E|Y−Y'|` over all pairs \
         (`zoo::toy2d::energy_distance`); lower is better, and two independent draws of the data give the floor. In int8 `forward` and `inverse` \
         quantise their activations independently, so they are inverse only up to quantisation error; int8 is \
         meant for density evaluation and sampling, the exact round trip holds in f32.\n"
    );
    let _ = writeln!(
        s,
        "![samples](samples.png)\n\n`samples.png`: held-out data (blue) | f32 runtime samples | int8 runtime samples \
         (red) | Gaussian baseline samples (grey), window [-3, 3]².\n\n![latent](latent.png)\n\n`latent.png`: the \
         held-out data mapped to z by the f32 `forward` entry | N(0, I) latents, window [-4, 4]².\n"
    );
    s
}
