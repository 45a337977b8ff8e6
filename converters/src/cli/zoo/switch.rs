//! `mote zoo` for the Switch Transformer family.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, SwitchFigures};
use crate::report::bytes;
use crate::zoo::switch::{self as zs, SwitchReport, SwitchTrainOptions};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// The decoder-only character LM with top-1 mixture-of-experts feed-forward layers.
pub struct Switch;

impl ZooFamily for Switch {
    fn name(&self) -> &'static str {
        "switch"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = SwitchTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = zs::train_switch(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained: held-out loss {:.3} nats/char (unigram {:.3}, bigram {:.3}); expert usage {:?}",
            report.heldout_loss, report.unigram_loss, report.bigram_loss, report.expert_usage
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        let path = dir.join("train_report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let report: SwitchReport =
            serde_json::from_str(&text).with_context(|| format!("{} is not a training report", path.display()))?;
        publish(dir, &report)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_switch(dir)?.summary())
    }
}

/// Converts the family's ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, report: &SwitchReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::gpt_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_switch(dir)?;
    zs::write_switch_card(dir, report, &card_section(&figures))?;
    print!("{}", super::table(&[("switch", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &SwitchFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels).\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let rows: [(&str, String); 13] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        ("int8 arena (peak) / lower bound", format!("{} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8))),
        ("KV-cache state (int8)", bytes(f.state_int8)),
        ("fused `Moe` ops (forward)", f.moe_ops.to_string()),
        ("`Moe` operand dtypes in the int8 file (x, router, bias, w1, b1, w2, b2 → y)", f.moe_dtypes_int8.join(", ")),
        (
            "MACs per generated token (runtime count)",
            format!(
                "{} (of which Moe {}); all experts would be {}",
                f.macs_per_token, f.moe_macs_per_token, f.macs_per_token_all_experts
            ),
        ),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        ("held-out loss f32 / int8 (nats/char)", format!("{:.4} / {:.4}", f.loss_f32, f.loss_int8)),
        (
            "int8 vs f32 next-token agreement",
            format!("{:.2}% over {} positions", 100.0 * f.top1_agreement, f.heldout_positions),
        ),
        ("decode_step vs forward, f32 max-abs", format!("{:.1e}", f.decode_vs_forward_f32)),
        ("decode_step vs forward, int8 max-abs", format!("{:.1e}", f.decode_vs_forward_int8)),
        ("params (stored)", f.params.to_string()),
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
