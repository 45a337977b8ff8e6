//! `mote zoo` for the T5 prefix-LM family.

use super::{TrainSettings, ZooFamily};
use crate::family::{self, FamilyFigures, T5Figures};
use crate::zoo::seq2seq::publish::{self, flash_row, memory, parity_rows, runtime_section, samples_row, score_rows};
use crate::zoo::seq2seq::train::{trained_line, write_report};
use crate::zoo::t5::{self, T5Report};
use anyhow::Result;
use std::path::Path;

/// T5 (UniLM prefix-LM form).
pub struct T5;

impl ZooFamily for T5 {
    fn name(&self) -> &'static str {
        "t5"
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let report = t5::train_t5(out, &t5::BUDGET.with_overrides(settings.steps, settings.seed))?;
        write_report(out, &report)?;
        println!("{}", trained_line(report.train_seconds, report.model, report.copy_baseline));
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
    let figures = publish::publish(dir, family::t5_options, family::evaluate_t5, |f| {
        t5::write_t5_card(dir, r, &card_section(f))
    })?;
    print!("{}", super::table(&[("t5", &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &T5Figures) -> String {
    let fused: Vec<String> = f.fused_prefix_bias_ops.iter().map(|(e, n)| format!("{e} {n}")).collect();
    let [vs_tract, vs_candle] = parity_rows(&f.file);
    let [exact, token] = score_rows(&f.scores, "probes");
    let rows: [(&str, String); 10] = [
        flash_row(&f.file),
        ("int8 arena / lower bound / KV state", memory(&f.file)),
        ("MACs per decoded token", f.macs_per_token.to_string()),
        ("fused Attention ops with prefix mask + bucketed bias", fused.join(", ")),
        vs_tract,
        vs_candle,
        exact,
        token,
        (
            "prefill + decode_step vs forward, max-abs f32 / int8",
            format!("{:.1e} / {:.1e}", f.decode_vs_forward_f32, f.decode_vs_forward_int8),
        ),
        samples_row(&f.scores),
    ];
    runtime_section(
        "Greedy answers are decoded with the KV cache: `prefill` runs the prompt, `decode_step` one token at a \
         time.",
        &rows,
    )
}
