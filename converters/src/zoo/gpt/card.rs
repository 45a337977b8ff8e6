//! The GPT model card (`card.md`).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::gpt::GptReport) -> anyhow::Result<()> {
//! mote_converters::zoo::gpt::write_gpt_card(
//!     std::path::Path::new("models/gpt"),
//!     report,
//!     "## int8\n\n(added by the converter)\n",
//! )?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::train::GptReport;
use crate::zoo::card_md::{agreement_row, heldout_losses, onnx_row, push_extra, samples_list, visible, write_card};

/// Renders the card text (without writing it).
pub fn render_gpt_card(r: &GptReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let o = &r.options;
    let mut s = String::new();
    let _ = writeln!(s, "# gpt — character-level decoder-only Transformer LM\n");
    let _ = writeln!(
        s,
        "Trained from scratch in candle by `mote-converters` (zoo) and exported to ONNX \
         (`model.onnx`, opset 17) by the same layer code that trained it.\n"
    );
    let _ = writeln!(s, "## Task and data\n");
    let _ = writeln!(
        s,
        "Next-character prediction on a procedural corpus generated in code with fixed \
         seeds (no downloads). Each line is either a sentence of a small English-like grammar \
         with subject–verb and determiner–noun number agreement, including agreement across a \
         relative clause with an attractor noun of the other number (\"the cats that see a dog \
         run .\"), or an arithmetic fact (\"12+7=19;\", \"19-7=12;\", operands 0–49). 75% \
         sentences, 25% facts; lines end with a newline.\n"
    );
    let _ = writeln!(
        s,
        "- Training stream: {} chars; held-out stream: {} chars from a different seed.",
        o.train_chars, o.heldout_chars
    );
    let _ = writeln!(
        s,
        "- Vocabulary ({} symbols, id order, ⏎ = newline): `{}`\n",
        r.vocab.chars().count(),
        visible(&r.vocab)
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| layers | {} pre-LN blocks |", c.n_layers);
    let _ = writeln!(
        s,
        "| width | d_model {}, {} heads (head dim {}), MLP {} with erf-GELU |",
        c.d_model,
        c.n_heads,
        c.d_model / c.n_heads,
        c.d_ff
    );
    let _ = writeln!(s, "| context | {} chars, learned token + position embeddings |", c.max_seq);
    let _ = writeln!(s, "| head | final LayerNorm, untied linear LM head |");
    let _ = writeln!(s, "| parameters | {} |", r.params);
    let _ = writeln!(s, "| ONNX I/O | `tokens` int64 [1, seq] → `logits` f32 [1, seq, {}] |\n", c.vocab);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW (β = 0.9/0.99, weight decay {} on weight matrices only), peak lr {:e}, {} \
         warm-up steps then cosine decay to 10%, {} steps of {} random windows × {} chars, \
         seed {}. Wall time {:.0} s on the host CPU. Smoothed final train loss {:.3} nats/char.\n",
        o.weight_decay, o.lr, o.warmup, r.steps, o.batch_size, c.max_seq, o.seed, r.train_seconds, r.final_train_loss
    );
    let losses = (r.unigram_loss, r.bigram_loss, r.heldout_loss);
    heldout_losses(&mut s, "**gpt (candle, f32)**", r.heldout_tokens, c.max_seq, losses);
    agreement_row(&mut s, r.agreement_accuracy, r.agreement_probes);
    let _ = writeln!(s, "| `a+b=` completed exactly (greedy) | {:.1}% of {} |", 100.0 * r.sum_accuracy, r.sum_probes);
    onnx_row(&mut s, r.onnx_vs_candle_max_abs);
    let _ = writeln!(s, "## Samples\n");
    let _ = writeln!(s, "Sampling: {}.\n", r.sampling);
    samples_list(&mut s, &r.samples);
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `model.onnx`: the exported f32 model (metadata `mote.family`, `mote.tokenizer`, \
         `mote.max_seq`).\n- `golden/input_{{0..3}}.npy` (int64 [1,{m}]) and \
         `golden/output_{{0..3}}.npy` (f32 [1,{m},{v}]): held-out windows and candle's logits.\n\
         - `heldout.npy` (int64 [20,{m1}]): held-out windows, {m} inputs + next target.\n\
         - `calib/input_{{0..7}}.npy` (int64 [1,{m}]): training-stream windows for calibration.\n",
        m = c.max_seq,
        m1 = c.max_seq + 1,
        v = c.vocab
    );
    push_extra(&mut s, extra_markdown);
    s
}

/// Writes `card.md` into `out_dir`, appending `extra_markdown` (e.g. the converter's int8
/// figures).
pub fn write_gpt_card(out_dir: &Path, report: &GptReport, extra_markdown: &str) -> Result<()> {
    write_card(out_dir, &render_gpt_card(report, extra_markdown))
}
