//! `mote zoo` for the GPT family.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, GptFigures};
use crate::report::bytes;
use crate::zoo::{self, GptTrainOptions};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// The decoder-only character LM.
pub struct Gpt;

impl ZooFamily for Gpt {
    fn name(&self) -> &'static str {
        "gpt"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = GptTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = zoo::train_gpt(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!("trained: held-out loss {:.3} nats/char (unigram {:.3})", report.heldout_loss, report.unigram_loss);
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        let path = dir.join("train_report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let report: zoo::GptReport =
            serde_json::from_str(&text).with_context(|| format!("{} is not a training report", path.display()))?;
        publish(dir, &report)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_gpt(dir)?.summary())
    }
}

/// Converts the family's ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, report: &zoo::GptReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::gpt_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_gpt(dir)?;
    zoo::write_gpt_card(dir, report, &card_section(&figures))?;
    print!("{}", super::table(&[("gpt", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &GptFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels).\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let rows: [(&str, String); 12] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        ("int8 arena (peak) / lower bound", format!("{} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8))),
        ("KV-cache state (int8)", bytes(f.state_int8)),
        ("MACs per generated token", f.macs_per_token.to_string()),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        ("held-out loss f32 / int8 (nats/char)", format!("{:.4} / {:.4}", f.loss_f32, f.loss_int8)),
        (
            "int8 vs f32 next-token agreement",
            format!("{:.2}% over {} positions", 100.0 * f.top1_agreement, f.heldout_positions),
        ),
        ("decode_step vs forward, f32 max-abs", format!("{:.1e}", f.decode_vs_forward_f32)),
        (
            "decode_step vs forward, int8",
            if f.decode_vs_forward_int8 == 0.0 {
                "bit-exact".into()
            } else {
                format!("{:.1e}", f.decode_vs_forward_int8)
            },
        ),
        ("arena / lower bound (forward, f32 / int8)", format!("{:.3} / {:.3}", f.plan_ratio_f32, f.plan_ratio_int8)),
        ("params", f.params.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\nGreedy generations of `model.int8.mote` on the runtime (`mote generate`):\n");
    for (p, t) in &f.samples {
        let _ = writeln!(s, "- `{p}` → `{}`", t.replace('\n', "⏎"));
    }
    s
}
