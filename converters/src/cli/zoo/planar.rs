//! `mote zoo` for the planar flow: train, convert both directions into one `.mote` (f32 and
//! int8), measure on the runtime, plot, write the card (the coupling flows' card section).

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures};
use crate::zoo::planar::{self as zp, PlanarReport, PlanarTrainOptions};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The planar flow family.
pub struct Planar;

impl ZooFamily for Planar {
    fn name(&self) -> &'static str {
        "planar"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = PlanarTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = zp::train_planar(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: test NLL {:.4} nats/dim (Gaussian {:.4}); energy distance {:.5} (Gaussian {:.5}, \
             floor {:.5}); Newton residual {:.1e}",
            report.train_seconds,
            report.test_nll,
            report.baseline_nll,
            report.energy_candle,
            report.energy_baseline,
            report.energy_floor,
            report.newton_residual
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &PlanarReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_planar(dir)?.summary())
    }
}

/// Converts both directions (f32 and int8), measures them on the runtime, plots, writes the card.
fn publish(dir: &Path, r: &PlanarReport) -> Result<()> {
    let fwd = dir.join("forward.onnx");
    for (quant, file) in [(QuantMode::F32, "model.mote"), (QuantMode::Int8, "model.int8.mote")] {
        let converted = crate::convert::convert(&fwd, &family::planar_options(dir, quant)?)?;
        std::fs::write(dir.join(file), &converted.bytes)?;
    }
    let f = family::evaluate_planar(dir)?;
    super::coupling::plots(dir, &f)?;
    let mut section = super::coupling::card_section(&f);
    let _ = writeln!(
        section,
        "`forward` runs K = {} layer inverses of {} unrolled Newton steps each, which is why its MACs and \
         op count are far above `inverse`'s (K planar layers). In int8 the Newton iterates are quantised \
         activations like any other, so the int8 `forward` is an approximate inverse; its NLL is reported above \
         against f32.\n",
        r.options.config.layers, r.options.config.newton_steps
    );
    zp::write_planar_card(dir, r, &section)?;
    print!("{}", super::table(&[("planar", &f.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}
