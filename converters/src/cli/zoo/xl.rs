//! `mote zoo` for the Transformer-XL family.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::xl::{evaluate_xl, xl_options, XlFigures};
use crate::family::FamilyFigures;
use crate::report::bytes;
use crate::zoo::xl::{train_xl, write_xl_card, XlReport, XlTrainOptions};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// The segment-recurrent character LM.
pub struct TransformerXl;

impl ZooFamily for TransformerXl {
    fn name(&self) -> &'static str {
        "transformer-xl"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = XlTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = train_xl(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: held-out loss {:.3} with memory, {:.3} with memory reset every segment \
             (unigram {:.3}, bigram {:.3}); recall accuracy {:.1}% vs {:.1}%",
            report.train_seconds,
            report.with_memory.loss,
            report.without_memory.loss,
            report.unigram_loss,
            report.bigram_loss,
            100.0 * report.with_memory.recall_accuracy,
            100.0 * report.without_memory.recall_accuracy
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        let path = dir.join("train_report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let report: XlReport =
            serde_json::from_str(&text).with_context(|| format!("{} is not an XL training report", path.display()))?;
        publish(dir, &report)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(evaluate_xl(dir)?.summary())
    }
}

/// Converts the family's ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, report: &XlReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &xl_options(dir, QuantMode::Int8))?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = evaluate_xl(dir)?;
    write_xl_card(dir, report, &card_section(&figures))?;
    print!("{}", super::table(&[("transformer-xl", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &XlFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo report` (host runtime, scalar reference kernels). One `forward` call is one \
         segment of {} chars; the session keeps the memory in its state region between calls.\n",
        f.seg
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let pct = |(a, b): (f64, f64)| format!("{:.1}% / {:.1}%", 100.0 * a, 100.0 * b);
    let rows: [(&str, String); 13] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        ("int8 arena / lower bound", format!("{} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8))),
        ("state (memory of every layer + validity)", bytes(f.state_int8)),
        (
            "MACs per segment / per char",
            format!("{} / {}", f.macs_per_segment, f.macs_per_segment / f.seg.max(1) as u64),
        ),
        (
            "attention",
            format!(
                "{} fused `Attention` ops (causal over [memory; segment], XL relative term, validity as key mask)",
                f.fused_xl_attention_ops
            ),
        ),
        (
            "f32 .mote vs tract (tract given the state explicitly), max-abs",
            format!("{:.2e} over {} consecutive segments", f.f32_vs_tract_max_abs, f.golden_segments),
        ),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        ("held-out loss, memory carried, f32 / int8 (nats/char)", format!("{:.4} / {:.4}", f.loss_f32, f.loss_int8)),
        (
            "held-out loss, memory reset every segment, f32 / int8",
            format!("{:.4} / {:.4}", f.loss_f32_no_memory, f.loss_int8_no_memory),
        ),
        ("recall accuracy, memory carried, f32 / int8", pct(f.recall_accuracy)),
        ("recall accuracy, memory reset, f32 / int8", pct(f.recall_accuracy_no_memory)),
        (
            "int8 vs f32 next-char agreement",
            format!("{:.2}% over {} positions", 100.0 * f.top1_agreement, f.heldout_positions),
        ),
        ("baselines: unigram / bigram (nats/char)", format!("{:.4} / {:.4}", f.baselines.0, f.baselines.1)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}
