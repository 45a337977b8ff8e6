//! Publishing a trained sequence-to-sequence folder: the int8 file converted from its
//! `model.onnx` and the card's "On the mote runtime" section, whose rows the families compose
//! from the shared ones here and their own.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::card::pct;
use super::figures::{FileFigures, GreedyScores};
use crate::convert::Options;
use crate::emit::dtypes::QuantMode;
use crate::report::bytes;

/// Converts `dir/model.onnx` with the family's `options` in int8 and writes `model.int8.mote`,
/// then measures the folder with `evaluate` and writes its card with `card`; returns the
/// figures.
pub fn publish<F>(
    dir: &Path,
    options: fn(&Path, QuantMode) -> Result<Options>,
    evaluate: fn(&Path) -> Result<F>,
    card: impl FnOnce(&F) -> Result<()>,
) -> Result<F> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = evaluate(dir)?;
    card(&figures)?;
    Ok(figures)
}

/// The card's runtime section: the heading, the sentence on how it was measured ending with
/// `how` (the family's decoding), and the table of `rows` (figure, value).
pub fn runtime_section(how: &str, rows: &[(&str, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels). {how}\n");
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

/// The flash row: f32 and int8 file bytes.
pub fn flash_row(f: &FileFigures) -> (&'static str, String) {
    ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8)))
}

/// The value of the memory row: int8 arena, its lower bound and the state.
pub fn memory(f: &FileFigures) -> String {
    format!("{} / {} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8), bytes(f.state_int8))
}

/// The rows of the f32 file's golden parity with tract and with candle.
pub fn parity_rows(f: &FileFigures) -> [(&'static str, String); 2] {
    [
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
    ]
}

/// The exact match and token accuracy rows (f32, int8, copy baseline), the held-out set counted
/// as `over` (e.g. `held-out examples`).
pub fn score_rows(s: &GreedyScores, over: &str) -> [(&'static str, String); 2] {
    [
        (
            "exact match f32 / int8 / copy baseline",
            format!(
                "{} / {} / {} over {} {over}",
                pct(s.exact_f32),
                pct(s.exact_int8),
                pct(s.baseline_exact),
                s.heldout_examples
            ),
        ),
        (
            "token accuracy f32 / int8 / copy baseline",
            format!("{} / {} / {}", pct(s.token_f32), pct(s.token_int8), pct(s.baseline_token)),
        ),
    ]
}

/// The int8 samples row.
pub fn samples_row(s: &GreedyScores) -> (&'static str, String) {
    ("int8 samples", s.samples.iter().map(|(p, a)| format!("`{p}` → `{a}`")).collect::<Vec<_>>().join(", "))
}
