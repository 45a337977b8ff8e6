//! The BERT / ALBERT model card (`card.md`).
//!
//! ```no_run
//! # fn demo(report: &mote_converters::zoo::bert::MlmReport) -> anyhow::Result<()> {
//! mote_converters::zoo::bert::write_mlm_card(
//!     std::path::Path::new("models/bert"),
//!     report,
//!     "## int8\n\n(added by the converter)\n",
//! )?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::train::MlmReport;
use super::MlmFamily;

/// Renders the card text (without writing it).
pub fn render_mlm_card(r: &MlmReport, extra_markdown: &str) -> String {
    let c = &r.config;
    let o = &r.options;
    let mut s = String::new();
    let albert = c.family == MlmFamily::Albert;
    let title = if albert {
        "albert — character-level ALBERT: factorised embeddings, one layer shared across depth"
    } else {
        "bert — character-level BERT masked language model"
    };
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "Trained from scratch in candle by `mote-converters` (zoo) and exported to ONNX \
         (`model.onnx`, opset 17) by the same layer code that trained it.\n"
    );
    let _ = writeln!(s, "## Task and data\n");
    let _ = writeln!(
        s,
        "Masked-token recovery on the procedural corpus of the zoo (a small English-like grammar \
         with number agreement, and arithmetic facts such as `12+7=19;`). An example is a window \
         of {}–{} characters starting at a line start, padded to {} with `[PAD]`; segment 0 runs \
         up to and including the first line break, segment 1 after it. Each real character is \
         replaced by `[MASK]` with probability {} (at least one per example) and the model \
         predicts the original character there. The padding mask keeps `[PAD]` out of every \
         attention.\n",
        o.min_len, c.max_seq, c.max_seq, o.mask_prob
    );
    let _ = writeln!(
        s,
        "- Training stream: {} chars (fresh random examples every step); held-out stream: {} chars \
         from a different seed, {} examples, {} masked positions.",
        o.train_chars, o.heldout_chars, o.eval_examples, r.heldout_positions
    );
    let _ = writeln!(
        s,
        "- Vocabulary: {} characters (`{}`, ⏎ = newline) then the special tokens ({}).\n",
        r.vocab.chars().count(),
        r.vocab.replace('\n', "⏎"),
        r.special_tokens
    );
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    if albert {
        let _ = writeln!(
            s,
            "| encoder | {} post-LN layers applying **one shared set of weights** ({} params, stored once) |",
            c.n_layers, r.layer_params
        );
        let _ = writeln!(
            s,
            "| embeddings | factorised: word, position and segment tables of width E = {}, LayerNorm, \
             then Linear E → H = {} |",
            c.embed_dim, c.d_model
        );
    } else {
        let _ = writeln!(s, "| encoder | {} post-LN layers ({} params each) |", c.n_layers, r.layer_params);
        let _ = writeln!(s, "| embeddings | word + position + segment tables of width {}, LayerNorm |", c.d_model);
    }
    let _ = writeln!(
        s,
        "| width | H {}, {} heads (head dim {}), MLP {} with erf-GELU; bidirectional attention with \
         the padding mask |",
        c.d_model,
        c.n_heads,
        c.d_model / c.n_heads,
        c.d_ff
    );
    let _ = writeln!(
        s,
        "| MLM head | Linear H → {e}, GELU, LayerNorm, decoder tied to the word embeddings (+ bias) |",
        e = c.embed_dim
    );
    let _ = writeln!(s, "| parameters | {} trainable |", r.params);
    let _ = writeln!(
        s,
        "| ONNX I/O | `input_ids`, `attention_mask`, `token_type_ids` int64 [1, seq] → `logits` f32 \
         [1, seq, {}] |",
        c.vocab
    );
    let _ = writeln!(
        s,
        "| padding mask in ONNX | `(1 - Cast(Unsqueeze(attention_mask, [1,2]))) * -10000`, added to the \
         scaled scores before Softmax (as Hugging Face BERT exports it) |\n"
    );
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(
        s,
        "AdamW (β = 0.9/0.99, weight decay {} on weight matrices only), peak lr {:e}, {} warm-up \
         steps then cosine decay to 10%, {} steps of {} examples, seed {}. Wall time {:.0} s on \
         the host CPU. Smoothed final train loss {:.3} nats per masked char.\n",
        o.weight_decay, o.lr, o.warmup, r.steps, o.batch_size, o.seed, r.train_seconds, r.final_train_loss
    );
    let _ = writeln!(s, "## Metrics (held-out masked positions, candle f32)\n");
    let b = &r.baselines;
    let _ = writeln!(s, "| predictor | accuracy | nats/char |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| majority baseline (most frequent masked char in training) | {:.2}% | |",
        100.0 * b.majority_accuracy
    );
    let _ = writeln!(s, "| unigram baseline (training distribution of masked chars) | | {:.4} |", b.unigram_loss);
    let _ = writeln!(
        s,
        "| neighbours baseline (most frequent char given the visible left and right neighbour) | {:.2}% | |",
        100.0 * b.neighbours_accuracy
    );
    let _ = writeln!(
        s,
        "| **{} (candle, f32)** | **{:.2}%** | **{:.4}** |\n",
        r.family,
        100.0 * r.heldout_accuracy,
        r.heldout_loss
    );
    let _ = writeln!(s, "| check | result |\n|---|---|");
    let _ = writeln!(
        s,
        "| exported ONNX in tract vs candle, max abs logit difference (golden inputs) | {:.2e} |",
        r.onnx_vs_candle_max_abs
    );
    let _ = writeln!(
        s,
        "| padded (to {}) vs unpadded input, real positions, max abs logit difference | {:.2e} |\n",
        c.max_seq, r.padding_max_abs
    );
    let _ = writeln!(s, "## Fills (held-out, `?` = `[MASK]`, `_` = `[PAD]` not shown)\n");
    for f in &r.fills {
        let _ = writeln!(s, "- `{}` → `{}` (truth `{}`)", f.masked, f.filled, f.original);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "## Files\n");
    let _ = writeln!(
        s,
        "- `model.onnx`: the exported f32 model (metadata `mote.family`, `mote.task`, `mote.tokenizer`, \
         `mote.special_tokens`, `mote.max_seq`).\n\
         - `golden/{{k}}.{{input_ids,attention_mask,token_type_ids}}.npy` (int64 [1,{m}], k = 0..3, the \
         shortest of the first 64 held-out examples, padded) and `golden/{{k}}.logits.npy` (f32 \
         [1,{m},{v}]): candle's logits.\n\
         - `heldout/{{input_ids,attention_mask,token_type_ids,labels}}.npy` (int64 [{n},{m}]): held-out \
         examples; labels are the original char at masked positions, -100 elsewhere.\n\
         - `calib/{{k}}.{{input}}.npy` (k = 0..7): training examples for int8 calibration.\n",
        m = c.max_seq,
        v = c.vocab,
        n = o.eval_examples
    );
    s.push_str(extra_markdown);
    if !extra_markdown.is_empty() && !extra_markdown.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Writes `card.md` into `out_dir`, appending `extra_markdown` (e.g. the runtime figures).
pub fn write_mlm_card(out_dir: &Path, report: &MlmReport, extra_markdown: &str) -> Result<()> {
    let path = out_dir.join("card.md");
    std::fs::write(&path, render_mlm_card(report, extra_markdown))
        .with_context(|| format!("writing {}", path.display()))
}
