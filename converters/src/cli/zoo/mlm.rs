//! `mote zoo` for the masked-LM families (BERT, ALBERT).

use super::{TrainSettings, ZooFamily};
use crate::emit::dtypes::QuantMode;
use crate::family::{self, FamilyFigures, MlmFigures};
use crate::report::{self, bytes};
use crate::zoo::bert::{self, MlmFamily, MlmReport, MlmTrainOptions};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

/// BERT or ALBERT.
pub struct Mlm(pub MlmFamily);

impl ZooFamily for Mlm {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn train(&self, out: &Path, settings: &TrainSettings) -> Result<()> {
        let mut opts = MlmTrainOptions::for_family(self.0);
        if let Some(s) = settings.steps {
            opts.steps = s;
        }
        if let Some(s) = settings.seed {
            opts.seed = s;
        }
        let report = bert::train_mlm(out, self.0, &opts)?;
        std::fs::write(out.join("train_report.json"), serde_json::to_string_pretty(&report)?)?;
        println!(
            "trained in {:.0} s: held-out MLM accuracy {:.2}% (majority {:.2}%, neighbours {:.2}%)",
            report.train_seconds,
            100.0 * report.heldout_accuracy,
            100.0 * report.baselines.majority_accuracy,
            100.0 * report.baselines.neighbours_accuracy
        );
        publish(out, &report)
    }

    fn refresh(&self, dir: &Path) -> Result<()> {
        publish(dir, &read_report(dir)?)
    }

    fn evaluate(&self, dir: &Path) -> Result<FamilyFigures> {
        Ok(family::evaluate_mlm(dir)?.summary())
    }
}

fn read_report(dir: &Path) -> Result<MlmReport> {
    MlmReport::read(dir)
}

/// Converts the family's ONNX model to int8, measures it on the runtime, writes the card.
fn publish(dir: &Path, r: &MlmReport) -> Result<()> {
    let converted = crate::convert::convert(&dir.join("model.onnx"), &family::mlm_options(dir, QuantMode::Int8)?)?;
    std::fs::write(dir.join("model.int8.mote"), &converted.bytes)?;
    let figures = family::evaluate_mlm(dir)?;
    let mut extra = card_section(&figures);
    extra.push_str(&comparison(dir, r, &figures));
    bert::write_mlm_card(dir, r, &extra)?;
    print!("{}", super::table(&[(&r.family, &figures.summary())]));
    println!("wrote {}", dir.display());
    Ok(())
}

/// The card section the runtime measurements fill in.
pub fn card_section(f: &MlmFigures) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## On the mote runtime\n");
    let _ = writeln!(s, "Measured by `mote zoo report` (host runtime, scalar reference kernels, seq = {}).\n", f.seq);
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let attention = if f.fused_attention_ops > 0 {
        format!("{} fused `Attention` ops with the padding mask as their key-mask input", f.fused_attention_ops)
    } else {
        "not fused: the padding-mask pattern runs as plain ops (MatMul, Add, Softmax)".to_string()
    };
    let rows: [(&str, String); 13] = [
        ("flash, f32 / int8", format!("{} / {}", bytes(f.flash_f32), bytes(f.flash_int8))),
        ("weights, f32 / int8", format!("{} / {}", bytes(f.weight_bytes_f32), bytes(f.weight_bytes_int8))),
        ("int8 arena / lower bound", format!("{} / {}", bytes(f.arena_int8), bytes(f.lower_bound_int8))),
        ("MACs per forward / per token", format!("{} / {}", f.macs_forward, f.macs_forward / f.seq.max(1) as u64)),
        ("attention", attention),
        ("f32 .mote vs tract, max-abs (golden)", format!("{:.2e}", f.f32_vs_tract_max_abs)),
        ("f32 .mote vs candle, max-abs (golden)", format!("{:.2e}", f.f32_vs_candle_max_abs)),
        ("f32 .mote padded vs tract unpadded, real positions", format!("{:.2e}", f.padded_vs_unpadded_max_abs)),
        ("int8 .mote, other content in the padding, real positions", format!("{:.1e}", f.padding_content_int8_max_abs)),
        (
            "MLM accuracy f32 / int8",
            format!(
                "{:.2}% / {:.2}% over {} masked positions",
                100.0 * f.accuracy_f32,
                100.0 * f.accuracy_int8,
                f.heldout_positions
            ),
        ),
        ("MLM loss f32 / int8 (nats/char)", format!("{:.4} / {:.4}", f.loss_f32, f.loss_int8)),
        ("int8 vs f32 argmax agreement", format!("{:.2}%", 100.0 * f.top1_agreement)),
        (
            "baselines: majority / neighbours",
            format!("{:.2}% / {:.2}%", 100.0 * f.baseline_majority, 100.0 * f.baseline_neighbours),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

/// The ALBERT vs BERT table, from this family's figures and the sibling folder's committed
/// artefacts (left out while the sibling is not trained yet).
fn comparison(dir: &Path, r: &MlmReport, f: &MlmFigures) -> String {
    let other = if r.config.family == MlmFamily::Bert { MlmFamily::Albert } else { MlmFamily::Bert };
    let Some(parent) = dir.parent() else { return String::new() };
    let odir = parent.join(other.name());
    let Ok(or) = read_report(&odir) else { return String::new() };
    let Some((o_flash, o_weights)) = std::fs::read(odir.join("model.int8.mote"))
        .ok()
        .and_then(|b| Some((b.len(), report::inspect(&mote::Model::parse(&b).ok()?).ok()?.weight_bytes)))
    else {
        return String::new();
    };
    let mut rows = vec![(r, f.flash_int8, f.weight_bytes_int8), (&or, o_flash, o_weights)];
    rows.sort_by_key(|(x, _, _)| x.family != "bert");
    let mut s = String::new();
    let _ = writeln!(s, "\n## ALBERT vs BERT\n");
    let _ = writeln!(
        s,
        "Same width, heads, MLP and depth ({} layers); ALBERT factorises its embeddings (E = {}) and \
         stores one layer for all depths.\n",
        r.config.n_layers, rows[1].0.config.embed_dim
    );
    let _ = writeln!(s, "| family | trainable params | stored encoder-layer params | int8 flash | int8 weights | MLM accuracy (candle f32) |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (x, flash, weights) in &rows {
        let distinct = if x.config.shares_layers() { 1 } else { x.config.n_layers };
        let _ = writeln!(
            s,
            "| {} | {} | {} × {} | {} | {} | {:.2}% |",
            x.family,
            x.params,
            distinct,
            x.layer_params,
            bytes(*flash),
            bytes(*weights),
            100.0 * x.heldout_accuracy
        );
    }
    let ratio = rows[0].1 as f64 / rows[1].1.max(1) as f64;
    let _ = writeln!(s, "\nALBERT's int8 file is {ratio:.1}× smaller than BERT's.");
    s
}
