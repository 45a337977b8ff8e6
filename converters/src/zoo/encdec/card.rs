//! The encoder–decoder model card (`card.md`).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::encdec::EncDecReport) -> anyhow::Result<()> {
//! mote_converters::zoo::encdec::write_encdec_card(std::path::Path::new("models/encdec"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::task;
use super::train::EncDecReport;
use crate::zoo::card_md::{push_extra, write_card};
use crate::zoo::seq2seq::card::{metrics, samples, training, width_row};

/// Renders the card text (without writing it).
pub fn render_encdec_card(r: &EncDecReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let mut s = String::new();
    let _ = writeln!(s, "# encdec — vanilla Transformer encoder–decoder (toy translation)\n");
    let _ = writeln!(
        s,
        "A pre-norm Transformer encoder–decoder (Vaswani et al., 2017) trained from scratch in candle by \
         `mote-converters` (zoo) and exported to ONNX (`model.onnx`, opset 17) by the same layer code. \
         The encoder reads the padded source with a padding mask; the decoder generates the target \
         causally, attending to the encoder output (cross-attention).\n"
    );
    let _ = writeln!(s, "## Task and data\n");
    let _ = writeln!(
        s,
        "Sequence reversal, generated in code with fixed seeds: the source is {}–{} symbols drawn uniformly \
         from {} (`{}`), padded with `_` to {} (mask 0 on padding); the target is `^` (BOS), the reversed \
         source, `$` (EOS). Training draws fresh examples every step; the held-out set \
         (`heldout.*.npy`) comes from another seed.\n",
        task::MIN_LEN,
        task::MAX_LEN,
        task::SYMBOLS,
        &r.vocab[3..],
        c.max_src
    );
    let _ = writeln!(s, "- Vocabulary ({} ids, id order): `{}`\n", r.vocab.chars().count(), r.vocab);
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(
        s,
        "| layers | {} encoder + {} decoder pre-norm layers (LayerNorm with bias), final LayerNorm on each side |",
        c.enc_layers, c.dec_layers
    );
    width_row(&mut s, c.d_model, c.n_heads, &format!("GELU FFN {}", c.d_ff));
    let _ = writeln!(
        s,
        "| embeddings | one token table shared by source and target, scaled by √d; untied output projection |"
    );
    let _ = writeln!(
        s,
        "| positions | sinusoidal, computed in the graph from `Range(0, S)` (Sin/Cos of position × 1/10000^(2i/d)) |"
    );
    let _ = writeln!(
        s,
        "| attention | encoder: bidirectional + source padding mask; decoder: causal self-attention, then \
         cross-attention over the encoder output with the same padding mask |"
    );
    let _ = writeln!(s, "| bounds | source {} tokens, decoder input {} tokens |", c.max_src, c.max_tgt);
    let _ = writeln!(s, "| parameters | {} |", r.params);
    let _ = writeln!(
        s,
        "| ONNX I/O | `src` int64 [1, src], `src_mask` int64 [1, src], `tgt` int64 [1, tgt] → `logits` f32 \
         [1, tgt, {}] |\n",
        c.vocab
    );
    training(
        &mut s,
        &r.options,
        "teacher forcing with the loss on the target tokens up to EOS",
        r.train_seconds,
        &format!("{:.4} nats/token", r.final_train_loss),
    );
    metrics(
        &mut s,
        &format!("{} held-out examples; exact match = the whole output sequence right.", r.heldout_examples),
        &[
            ("copy-the-source baseline (unreversed)".into(), r.copy_baseline),
            ("**encdec (candle, f32)**".into(), r.model),
        ],
        r.onnx_vs_candle_max_abs,
    );
    samples(&mut s, &r.samples);
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `model.onnx`: the exported f32 model (metadata `mote.family`, `mote.tokenizer`, \
         `mote.special_tokens`, `mote.max_src`, `mote.max_tgt`, `mote.decode` = `tgt`, the decoded dim).\n\
         - `model.int8.mote`: converted with `--dim src={s},tgt={t}`.\n\
         - `golden/g{{0..3}}.{{src,src_mask,tgt,logits}}.npy`: held-out examples and candle's logits.\n\
         - `calib/s{{0..7}}.{{src,src_mask,tgt}}.npy`: training-stream examples for calibration.\n\
         - `heldout.{{src,src_mask,tgt}}.npy`: the held-out set (targets with BOS/EOS, padded).\n",
        s = c.max_src,
        t = c.max_tgt
    );
    push_extra(&mut s, extra_markdown);
    s
}

/// Writes `card.md` into `out_dir`, appending `extra_markdown` (the runtime figures).
pub fn write_encdec_card(out_dir: &Path, report: &EncDecReport, extra_markdown: &str) -> Result<()> {
    write_card(out_dir, &render_encdec_card(report, extra_markdown))
}
