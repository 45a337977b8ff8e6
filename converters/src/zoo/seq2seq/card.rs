//! Markdown sections the sequence-to-sequence model cards share: the width row of the
//! architecture table, the training paragraph, the held-out accuracy table with the ONNX parity
//! line, and the samples list. Each card writes its
//! own introduction, task, architecture and file list around them.

use std::fmt::Write as _;

use super::train::{Accuracy, TrainOptions};

/// A fraction as a percentage with one decimal, e.g. `97.3%`.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The architecture table's width row: the model width, the heads and their size, then `rest`
/// (what the family's attention and feed-forward layers are).
pub fn width_row(s: &mut String, d_model: usize, n_heads: usize, rest: &str) {
    let _ = writeln!(s, "| width | d_model {d_model}, {n_heads} heads (head dim {}), {rest} |", d_model / n_heads);
}

/// The "Training" heading and paragraph: the optimiser and budget of `o`, what the loss is
/// taken on (`loss_on`), the wall time and the final smoothed loss (`final_loss`, formatted
/// with its unit).
pub fn training(s: &mut String, o: &TrainOptions, loss_on: &str, train_seconds: f64, final_loss: &str) {
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW (β = 0.9/0.99, weight decay {} on weight matrices), peak lr {:e}, {} warm-up steps then \
         cosine decay to 10%, {} steps of {} examples, {loss_on}, seed {}. Wall time {train_seconds:.0} s on \
         the host CPU. Smoothed final train loss {final_loss}.\n",
        o.weight_decay, o.lr, o.warmup, o.steps, o.batch_size, o.seed
    );
}

/// The "Metrics" heading, the sentence `about` the held-out set, the table of `rows` (name,
/// accuracy: the baseline first, then the model) and the tract-vs-candle line.
pub fn metrics(s: &mut String, about: &str, rows: &[(String, Accuracy)], onnx_vs_candle_max_abs: f32) {
    let _ = writeln!(s, "## Metrics (held-out, greedy, candle f32)\n");
    let _ = writeln!(s, "{about}\n");
    let _ = writeln!(s, "| model | exact match | token accuracy |\n|---|---|---|");
    for (name, a) in rows {
        let _ = writeln!(s, "| {name} | {} | {} |", pct(a.exact), pct(a.token));
    }
    let _ = writeln!(
        s,
        "\nExported ONNX in tract vs candle, max abs logit difference on golden inputs: {onnx_vs_candle_max_abs:.2e}.\n"
    );
}

/// The "Samples" heading and one list item per `(source, answer)`, then a blank line.
pub fn samples(s: &mut String, samples: &[(String, String)]) {
    let _ = writeln!(s, "## Samples\n");
    for (src, out) in samples {
        let _ = writeln!(s, "- `{src}` → `{out}`");
    }
    let _ = writeln!(s);
}
