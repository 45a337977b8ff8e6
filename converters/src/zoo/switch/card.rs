//! The Switch Transformer model card (`card.md`).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::switch::SwitchReport) -> anyhow::Result<()> {
//! mote_converters::zoo::switch::write_switch_card(std::path::Path::new("models/switch"), report, "")?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::train::SwitchReport;
use crate::zoo::card_md::{agreement_row, heldout_losses, onnx_row, push_extra, samples_list, visible, write_card};

/// Renders the card text (without writing it).
pub fn render_switch_card(r: &SwitchReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let o = &r.options;
    let mut s = String::new();
    let _ = writeln!(s, "# switch — character-level decoder-only Switch Transformer LM (top-1 MoE)\n");
    let _ = writeln!(
        s,
        "Trained from scratch in candle by `mote-converters` (zoo) and exported to ONNX (`model.onnx`, opset \
         17) by the same layer code that trained it. The converter fuses each exported mixture-of-experts \
         layer into one `Moe` op that runs only the routed expert per token.\n"
    );
    let _ = writeln!(s, "## Task and data\n");
    let _ = writeln!(
        s,
        "The GPT family's task: next-character prediction on the procedural grammar + arithmetic corpus \
         (fixed seeds, no downloads); see `models/gpt/card.md`.\n"
    );
    let _ = writeln!(
        s,
        "- Training stream: {} chars; held-out stream: {} chars from a different seed.",
        o.train_chars, o.heldout_chars
    );
    let _ = writeln!(s, "- Vocabulary ({} symbols, ⏎ = newline): `{}`\n", r.vocab.chars().count(), visible(&r.vocab));
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| layers | {} pre-LN blocks, each with a Switch feed-forward layer |", c.n_layers);
    let _ = writeln!(
        s,
        "| attention | d_model {}, {} heads (head dim {}), causal |",
        c.d_model,
        c.n_heads,
        c.d_model / c.n_heads
    );
    let _ = writeln!(
        s,
        "| Switch layer | router `Linear {d}→{e}`, top-1 (argmax, first on ties); {e} experts `{d}→{f}→{d}` with \
         erf-GELU; output = router probability × chosen expert; no token dropping in training (capacity 0 = \
         unlimited in the converted file) |",
        d = c.d_model,
        e = c.n_experts,
        f = c.d_ff
    );
    let _ = writeln!(s, "| context | {} chars, learned token + position embeddings |", c.max_seq);
    let _ = writeln!(s, "| parameters | {} total, {} active per token |", r.params, r.active_params);
    let _ = writeln!(
        s,
        "| MACs per generated token | {} (dense parts + router + one expert); {} if every expert ran ({:.2}×) |",
        r.macs_per_token,
        r.macs_per_token_all_experts,
        r.macs_per_token_all_experts as f64 / r.macs_per_token.max(1) as f64
    );
    let _ = writeln!(s, "| ONNX I/O | `tokens` int64 [1, seq] → `logits` f32 [1, seq, {}] |\n", c.vocab);
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW (β = 0.9/0.99, weight decay {} on weight matrices only), peak lr {:e}, {} warm-up steps then \
         cosine decay to 10%, {} steps of {} random windows × {} chars, seed {}. Loss = cross-entropy + {} × \
         the Switch load-balancing loss `E·Σ f_e·P_e` (mean over layers; 1.0 is perfectly balanced). Only the \
         routed expert runs per token in training too. Wall time {:.0} s on the host CPU. Smoothed final \
         train loss {:.3} nats/char, balancing loss {:.3}.\n",
        o.weight_decay,
        o.lr,
        o.warmup,
        r.steps,
        o.batch_size,
        c.max_seq,
        o.seed,
        o.aux_weight,
        r.train_seconds,
        r.final_train_loss,
        r.final_aux_loss
    );
    let losses = (r.unigram_loss, r.bigram_loss, r.heldout_loss);
    heldout_losses(&mut s, "**switch (candle, f32)**", r.heldout_tokens, c.max_seq, losses);
    agreement_row(&mut s, r.agreement_accuracy, r.agreement_probes);
    onnx_row(&mut s, r.onnx_vs_candle_max_abs);
    let _ = writeln!(s, "### Expert usage on the held-out windows (router top-1 choices)\n");
    let header: Vec<String> = (0..c.n_experts).map(|e| format!("expert {e}")).collect();
    let _ = writeln!(s, "| layer | {} |", header.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(c.n_experts));
    for (l, u) in r.expert_usage.iter().enumerate() {
        let total = u.iter().sum::<usize>().max(1) as f64;
        let cells: Vec<String> = u.iter().map(|&n| format!("{n} ({:.1}%)", 100.0 * n as f64 / total)).collect();
        let _ = writeln!(s, "| {l} | {} |", cells.join(" | "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "## Samples (candle, greedy, prompt after a line separator)\n");
    samples_list(&mut s, &r.samples);
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `model.onnx`: the exported f32 model (dense MoE form; metadata `mote.family`, `mote.tokenizer`, \
         `mote.max_seq`, `mote.moe_capacity`).\n- `model.int8.mote`: int8 conversion (the `Moe` ops keep f16 \
         expert weights, f32 router and activations).\n- `golden/input_{{0..3}}.npy` (int64 [1,{m}]) and \
         `golden/output_{{0..3}}.npy` (f32 [1,{m},{v}]): held-out windows and candle's logits.\n- `heldout.npy` \
         (int64 [20,{m1}]): held-out windows, {m} inputs + next target.\n- `calib/input_{{0..7}}.npy` (int64 \
         [1,{m}]): training-stream windows for calibration.\n",
        m = c.max_seq,
        m1 = c.max_seq + 1,
        v = c.vocab
    );
    push_extra(&mut s, extra_markdown);
    s
}

/// Writes `card.md` into `out_dir`, appending `extra_markdown` (the runtime figures).
pub fn write_switch_card(out_dir: &Path, report: &SwitchReport, extra_markdown: &str) -> Result<()> {
    write_card(out_dir, &render_switch_card(report, extra_markdown))
}
