//! `mote zoo` for the vanilla Transformer encoder–decoder family.

use super::{TrainSettings, ZooFamily};
use crate::family::{self, EncdecFigures, FamilyFigures};
use crate::zoo::encdec::{self, EncDecReport};
use crate::zoo::seq2seq::card::pct;
use crate::zoo::seq2seq::publish::{self, flash_row, memory, parity_rows, runtime_section, samples_row, score_rows};
use crate::zoo::seq2seq::train::{trained_line, write_report};
use anyhow::Result;
use std::path::Path;

/// The encoder–decoder (toy translation: sequence reversal).
pub struct EncDec;

impl ZooFamily for EncDec {
    fn name(&self) -> &'static str {
        "encdec"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let report = encdec::train_encdec(out, &encdec::BUDGET.with_overrides(settings.steps, settings.seed))?;
        write_report(out, &report)?;
        println!("{}", trained_line(report.train_seconds, report.model, report.copy_baseline));
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
    let figures = publish::publish(dir, family::encdec_options, family::evaluate_encdec, |f| {
        encdec::write_encdec_card(dir, r, &card_section(f))
    })?;
    print!("{}", super::table(&[("encdec", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &EncdecFigures) -> String {
    let how = if f.cached_equals_forward.is_some() {
        "`encode` runs the source once, then KV-cached `decode_step` one token at a time"
    } else {
        "the `forward` entry is recomputed for every generated token (the file has no `encode`/`decode_step` \
         entries)"
    };
    let (enc, causal, cross) = f.fused_attention;
    let mut rows: Vec<(&str, String)> = vec![
        ("entries (int8 file)", f.entries.join(", ")),
        flash_row(&f.file),
        ("int8 arena / lower bound / state", memory(&f.file)),
        ("MACs per generated token", f.macs_per_token.to_string()),
        ("fused Attention ops (forward): encoder self / decoder causal / cross", format!("{enc} / {causal} / {cross}")),
        ("converter notes", if f.notes.is_empty() { "none".into() } else { f.notes.join("; ") }),
    ];
    rows.extend(parity_rows(&f.file));
    rows.extend(score_rows(&f.scores, "held-out examples"));
    if let (Some((c32, c8)), Some((d32, d8))) = (f.cached_equals_forward, f.decode_vs_forward) {
        rows.push(("encode + decode_step greedy = forward greedy, f32 / int8", format!("{c32} / {c8}")));
        rows.push(("decode_step vs forward logits, max-abs f32 / int8", format!("{d32:.1e} / {d8:.1e}")));
    }
    if let Some(b) = f.beam4_exact_int8 {
        rows.push((
            "exact match int8, beam search width 4 / greedy",
            format!("{} / {}", pct(b), pct(f.scores.exact_int8)),
        ));
    }
    rows.push(samples_row(&f.scores));
    runtime_section(&format!("Greedy outputs: {how}."), &rows)
}
