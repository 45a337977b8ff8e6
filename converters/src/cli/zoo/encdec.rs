//! `mote zoo` for the vanilla Transformer encoder–decoder family.

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, EncdecFigures, FamilyFigures};
use crate::report::bytes;
use crate::zoo::encdec::{self, EncDecReport, EncDecTrainOptions};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// The encoder–decoder (toy translation: sequence reversal).
pub struct EncDec;

impl ZooFamily for EncDec {
    fn name(&self) -> &'static str {
        "encdec"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = EncDecTrainOptions::default();
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = encdec::train_encdec(out, &opts)?;
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
        publish(dir, &EncDecReport::read(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_encdec(dir)?.summary())
    }
}

/// Converts the ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, r: &EncDecReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::encdec_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_encdec(dir)?;
    encdec::write_encdec_card(dir, r, &card_section(&figures))?;
    print!("{}", super::table(&[("encdec", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &EncdecFigures) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let how = if f.cached_equals_forward.is_some() {
        "`encode` runs the source once, then KV-cached `decode_step` one token at a time"
    } else {
        "the `forward` entry is recomputed for every generated token (the file has no `encode`/`decode_step` \
         entries)"
    };
    let _ =
        writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels). Greedy outputs: {how}.\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let (enc, causal, cross) = f.fused_attention;
    let mut rows: Vec<(&str, String)> = vec![
        ("entries (int8 file)", f.entries.join(", ")),
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        (
            "int8 arena / lower bound / state",
            format!("{} / {} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8), bytes(f.state_int8)),
        ),
        ("MACs per generated token", f.macs_per_token.to_string()),
        ("fused Attention ops (forward): encoder self / decoder causal / cross", format!("{enc} / {causal} / {cross}")),
        ("converter notes", if f.notes.is_empty() { "none".into() } else { f.notes.join("; ") }),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        (
            "exact match f32 / int8 / copy baseline",
            format!(
                "{} / {} / {} over {} held-out examples",
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
    ];
    if let (Some((c32, c8)), Some((d32, d8))) = (f.cached_equals_forward, f.decode_vs_forward) {
        rows.push(("encode + decode_step greedy = forward greedy, f32 / int8", format!("{c32} / {c8}")));
        rows.push(("decode_step vs forward logits, max-abs f32 / int8", format!("{d32:.1e} / {d8:.1e}")));
    }
    if let Some(b) = f.beam4_exact_int8 {
        rows.push(("exact match int8, beam search width 4 / greedy", format!("{} / {}", pct(b), pct(f.exact_int8))));
    }
    rows.push(("int8 samples", f.samples.iter().map(|(p, a)| format!("`{p}` → `{a}`")).collect::<Vec<_>>().join(", ")));
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}
