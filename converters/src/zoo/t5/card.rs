//! The T5 model card (`card.md`).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::t5::T5Report) -> anyhow::Result<()> {
//! mote_converters::zoo::t5::write_t5_card(std::path::Path::new("models/t5"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::train::T5Report;
use crate::zoo::card_md::{push_extra, write_card};
use crate::zoo::seq2seq::card::{metrics, samples, training, width_row};

/// Renders the card text (without writing it).
pub fn render_t5_card(r: &T5Report, extra_markdown: &str) -> String {
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(s, "# t5 — text-to-text prefix-LM (T5 / UniLM)\n");
    let _ = writeln!(
        s,
        "A T5-style Transformer in its UniLM prefix-LM form, trained from scratch in candle by \
         `mote-converters` (zoo) and exported to ONNX (`model.onnx`, opset 17) by the same layer code. \
         One stack: the task prompt is a fully visible prefix (bidirectional attention), the answer \
         is generated causally with a KV cache.\n"
    );
    let _ = writeln!(s, "## Task and data\n");
    let _ = writeln!(
        s,
        "Procedural text-to-text with task prefixes, generated in code with fixed seeds: \
         `reverse:<src>=` → reversed `<src>`, `sort:<src>=` → letters of `<src>` sorted; `<src>` is \
         {}–{} letters from `{}`. The prompt is left-padded with `_` to {} characters (the prefix) and \
         the answer ends with `.`. Training draws fresh examples every step; the held-out probes come \
         from another seed.\n",
        super::task::MIN_LEN,
        super::task::MAX_LEN,
        super::task::LETTERS,
        r.prompt_len
    );
    let _ = writeln!(s, "- Vocabulary ({} symbols, id order): `{}`\n", r.vocab.chars().count(), r.vocab);
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| layers | {} pre-norm blocks (RMSNorm, no bias, no mean subtraction) |", c.n_layers);
    width_row(&mut s, c.d_model, c.n_heads, &format!("no 1/√d scaling, ReLU FFN {}", c.d_ff));
    let _ = writeln!(
        s,
        "| positions | one bucketed relative bias table [{}, {}] shared by all layers ({} bidirectional \
         buckets, saturating at distance {}); no absolute positions |",
        c.buckets, c.n_heads, c.buckets, c.max_distance
    );
    let _ = writeln!(s, "| mask | prefix-LM: keys before `prefix_len` visible to all queries, the rest causal |");
    let _ = writeln!(s, "| context | {} tokens |", c.max_seq);
    let _ = writeln!(s, "| parameters | {} |", r.params);
    let _ = writeln!(
        s,
        "| ONNX I/O | `tokens` int64 [1, seq], `prefix_len` int64 [1] → `logits` f32 [1, seq, {}] |\n",
        c.vocab
    );
    training(
        &mut s,
        &r.options,
        "loss on the answer characters only",
        r.train_seconds,
        &format!("{:.3} nats/char", r.final_train_loss),
    );
    let mut rows =
        vec![("copy-the-input baseline".to_string(), r.copy_baseline), ("**t5 (candle, f32)**".into(), r.model)];
    rows.extend(r.per_task.iter().map(|(t, a)| (format!("t5, `{t}:` only"), *a)));
    metrics(&mut s, &format!("{} probes, tasks alternating.", r.heldout_examples), &rows, r.onnx_vs_candle_max_abs);
    samples(&mut s, &r.samples);
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `model.onnx`: the exported f32 model (metadata `mote.family`, `mote.tokenizer`, `mote.max_seq`, \
         `mote.prefill` = the prompt length of the `prefill` entry).\n\
         - `model.int8.mote`: entries `forward` (seq {m}), `prefill` (the {p}-token prompt into the KV \
         caches) and `decode_step` (one token).\n\
         - `golden/g{{0..3}}.{{tokens,prefix_len,logits}}.npy`: held-out sequences and candle's logits.\n\
         - `calib/s{{0..7}}.{{tokens,prefix_len}}.npy`: training-stream sequences for calibration.\n",
        m = c.max_seq,
        p = r.prompt_len
    );
    push_extra(&mut s, extra_markdown);
    s
}

/// Writes `card.md` into `out_dir`, appending `extra_markdown` (the runtime figures).
pub fn write_t5_card(out_dir: &Path, report: &T5Report, extra_markdown: &str) -> Result<()> {
    write_card(out_dir, &render_t5_card(report, extra_markdown))
}
