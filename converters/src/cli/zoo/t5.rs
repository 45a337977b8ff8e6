//! `mote zoo` for the T5 prefix-LM family.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, T5Figures};
use crate::report::bytes;
use crate::zoo::t5::{self, T5Report, T5TrainOptions};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// T5 (UniLM prefix-LM form).
pub struct T5;

impl ZooFamily for T5 {
    fn name(&self) -> &'static str {
        "t5"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = T5TrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = t5::train_t5(out, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: held-out exact match {:.1}% (copy baseline {:.1}%), token accuracy {:.1}%",
            report.train_seconds,
            100.0 * report.model.exact,
            100.0 * report.copy_baseline.exact,
            100.0 * report.model.token
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &T5Report::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_t5(dir)?.summary())
    }
}

/// Converts the ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, r: &T5Report) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::t5_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_t5(dir)?;
    t5::write_t5_card(dir, r, &card_section(&figures))?;
    print!("{}", super::table(&[("t5", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &T5Figures) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(
        s,
        "Measured by `mote zoo report` (host runtime, scalar reference kernels). Greedy answers are \
         decoded with the KV cache: `prefill` runs the prompt, `decode_step` one token at a time.\n"
    );
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let fused: Vec<String> = f.fused_prefix_bias_ops.iter().map(|(e, n)| format!("{e} {n}")).collect();
    let rows: [(&str, String); 10] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        (
            "int8 arena / lower bound / KV state",
            format!("{} / {} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8), bytes(f.state_int8)),
        ),
        ("MACs per decoded token", f.macs_per_token.to_string()),
        ("fused Attention ops with prefix mask + bucketed bias", fused.join(", ")),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        (
            "exact match f32 / int8 / copy baseline",
            format!(
                "{} / {} / {} over {} probes",
                pct(f.exact_f32),
                pct(f.exact_int8),
                pct(f.baseline_exact),
                f.heldout_examples
            ),
        ),
        (
            "token accuracy f32 / int8 / copy baseline",
            format!("{} / {} / {}", pct(f.token_f32), pct(f.token_int8), pct(f.baseline_token)),
        ),
        (
            "prefill + decode_step vs forward, max-abs f32 / int8",
            format!("{:.1e} / {:.1e}", f.decode_vs_forward_f32, f.decode_vs_forward_int8),
        ),
        ("int8 samples", f.samples.iter().map(|(p, a)| format!("`{p}` → `{a}`")).collect::<Vec<_>>().join(", ")),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}
