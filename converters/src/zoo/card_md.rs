//! Markdown pieces shared by the causal-LM model cards (GPT, Switch, Transformer-XL): the
//! held-out loss table, the task-probe rows, the samples list and writing `card.md` with the
//! caller's extra markdown appended.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::gpt::Sample;

/// Shows control characters in a vocabulary or sample readably.
pub(crate) fn visible(s: &str) -> String {
    s.replace('\n', "⏎")
}

/// The "Metrics (held-out)" heading and the loss table: the unigram and bigram baselines and
/// the model (`model`, already formatted) on `tokens` held-out characters in windows of
/// `max_seq`.
pub(crate) fn heldout_losses(
    s: &mut String,
    model: &str,
    tokens: usize,
    max_seq: usize,
    (unigram, bigram, loss): (f64, f64, f64),
) {
    let bits = |nats: f64| nats / std::f64::consts::LN_2;
    let _ = writeln!(s, "## Metrics (held-out)\n");
    let _ =
        writeln!(s, "Scored on {} held-out characters ({} windows of {}).\n", tokens, tokens / max_seq.max(1), max_seq);
    let _ = writeln!(s, "| model | nats/char | bits/char |\n|---|---|---|");
    for (name, v) in [
        ("unigram baseline (train char frequencies)", unigram),
        ("bigram baseline (add-one smoothed)", bigram),
        (model, loss),
    ] {
        let _ = writeln!(s, "| {name} | {v:.4} | {:.4} |", bits(v));
    }
    let _ = writeln!(s);
}

/// The task-probe table header and the agreement row.
pub(crate) fn agreement_row(s: &mut String, accuracy: f64, probes: usize) {
    let _ = writeln!(s, "| task probe | result |\n|---|---|");
    let _ = writeln!(
        s,
        "| agreement across a relative clause (correct verb form more likely; chance 50%) | {:.1}% of {} |",
        100.0 * accuracy,
        probes
    );
}

/// The tract-vs-candle row that closes the task-probe table.
pub(crate) fn onnx_row(s: &mut String, max_abs: f32) {
    let _ = writeln!(
        s,
        "| exported ONNX in tract vs candle, max abs logit difference on golden inputs | {:.2e} |\n",
        max_abs
    );
}

/// One list item per sample, then a blank line.
pub(crate) fn samples_list(s: &mut String, samples: &[Sample]) {
    for smp in samples {
        let _ = writeln!(s, "- `{}` → `{}`", visible(&smp.prompt), visible(&smp.completion));
    }
    let _ = writeln!(s);
}

/// Appends `extra_markdown`, ending it with a newline.
pub(crate) fn push_extra(s: &mut String, extra_markdown: &str) {
    s.push_str(extra_markdown);
    if !extra_markdown.is_empty() && !extra_markdown.ends_with('\n') {
        s.push('\n');
    }
}

/// Writes `text` to `out_dir/card.md`.
pub(crate) fn write_card(out_dir: &Path, text: &str) -> Result<()> {
    let path = out_dir.join("card.md");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
