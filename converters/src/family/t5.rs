//! Figures of the T5 prefix-LM family measured through the converter and the runtime: parity
//! with tract, greedy text-to-text accuracy f32 vs int8 (KV-cached `prefill` + `decode_step`),
//! incremental decoding against the full pass, memory.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_t5(std::path::Path::new("models/t5"))?;
//! assert!(f.scores.exact_int8 > f.scores.baseline_exact);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, zoo_options, FamilyFigures};
use crate::array::{Array, Data};
use crate::convert::Options;
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::OnnxModel;
use crate::ir::IrOp;
use crate::zoo::seq2seq::figures::{argmax, FileFigures, GreedyScores};
use crate::zoo::t5::task::{self, Example, END, PROMPT_LEN};
use crate::zoo::t5::{T5Report, INPUT_NAMES};
use anyhow::{anyhow, bail, Context, Result};
use mote::ops::{MaskMode, PositionBias};
use serde::Serialize;
use std::path::Path;

/// Everything measured about a T5 folder.
#[derive(Debug, Clone, Serialize)]
pub struct T5Figures {
    /// The converted files: memory (the state is the KV caches), golden parity, freshness.
    pub file: FileFigures,
    /// Greedy answers (KV-cached) to the held-out probes, f32 and int8, against the copy
    /// baseline.
    pub scores: GreedyScores,
    /// MACs of one `decode_step` (full cache bound).
    pub macs_per_token: u64,
    /// Fused `Attention` ops with the prefix mask and the bucketed bias, per entry
    /// (`forward`, `prefill`, `decode_step`) of the int8 file.
    pub fused_prefix_bias_ops: Vec<(String, usize)>,
    /// `prefill` + `decode_step` logits vs the `forward` pass, f32 (max-abs over answer positions).
    pub decode_vs_forward_f32: f32,
    /// The same for int8 (0 means bit-exact).
    pub decode_vs_forward_int8: f32,
}

impl T5Figures {
    /// The report row: task metric = exact match of greedy answers (%).
    pub fn summary(&self) -> FamilyFigures {
        family_row!(self.file, self.macs_per_token, self.scores.metric())
    }
}

/// Options for converting a zoo T5 (the `prefill` and `decode_step` entries come from the
/// model's `mote.prefill` metadata and its prefix-LM attention).
pub fn t5_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    zoo_options(dir, quant, true)
}

/// Runs `prefill` on the prompt then `decode_step` on each of `forced` (teacher forcing) or,
/// when `forced` is `None`, on its own greedy choices until `.`; returns the generated ids
/// and the logits of every step (the prefill's last row first).
pub fn decode(
    bytes: &[u8],
    prompt: &[i64],
    forced: Option<&[i64]>,
    max_new: usize,
) -> Result<(Vec<i64>, Vec<Vec<f32>>)> {
    let model = mote::Model::parse(bytes)?;
    let pre = model.entry_by_name("prefill").map_err(|_| anyhow!("the model has no prefill entry"))?;
    let step = model.entry_by_name("decode_step").map_err(|_| anyhow!("the model has no decode_step entry"))?;
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let p = [prompt.len() as i32];
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    s.set_input_i32(pre, 0, &ids)?;
    s.set_input_i32(pre, 1, &p)?;
    s.run(pre)?;
    let out = model.tensor(model.entry_output(pre, 0)?)?.desc.shape.numel();
    let mut all = vec![0f32; out];
    s.output_f32(pre, 0, &mut all)?;
    let v = out / prompt.len();
    let mut logits = vec![all[out - v..].to_vec()];
    let mut generated = Vec::new();
    let mut row = vec![0f32; v];
    for k in 0..max_new {
        let next = match forced {
            Some(f) if k < f.len() => f[k],
            Some(_) => break,
            None => {
                let t = argmax(logits.last().map_or(&row[..], |l| &l[..])) as i64;
                if t == END as i64 {
                    break;
                }
                t
            }
        };
        generated.push(next);
        s.set_input_i32(step, 0, &[next as i32])?;
        s.set_input_i32(step, 1, &p)?;
        s.run(step)?;
        s.output_f32(step, 0, &mut row)?;
        logits.push(row.clone());
    }
    Ok((generated, logits))
}

/// Greedy answers of a `.mote` file for the examples (KV-cached decoding on the host runtime).
pub fn greedy_answers(bytes: &[u8], examples: &[Example]) -> Result<Vec<String>> {
    examples
        .iter()
        .map(|e| {
            let prompt: Vec<i64> =
                task::encode(&e.prompt()).context("prompt outside vocab")?.iter().map(|&t| t as i64).collect();
            let (ids, _) = decode(bytes, &prompt, None, task::MAX_LEN + 1)?;
            Ok(task::decode(&ids.iter().map(|&t| t as u32).collect::<Vec<_>>()))
        })
        .collect()
}

/// Max-abs difference between the `forward` logits of a golden sequence and the logits of
/// `prefill` + teacher-forced `decode_step` at the same positions (prompt end onwards).
pub fn decode_vs_forward(bytes: &[u8], tokens: &[i64]) -> Result<f32> {
    let n = tokens.len();
    let full =
        host::run(bytes, "forward", &[Array::i64(vec![1, n], tokens.to_vec()), prefix_array()])?.remove(0).to_f32();
    let v = full.len() / n;
    let (_, steps) = decode(bytes, &tokens[..PROMPT_LEN], Some(&tokens[PROMPT_LEN..n - 1]), n)?;
    let mut worst = 0f32;
    for (k, l) in steps.iter().enumerate() {
        let p = PROMPT_LEN - 1 + k;
        worst = worst.max(max_abs(l, &full[p * v..(p + 1) * v]));
    }
    Ok(worst)
}

fn prefix_array() -> Array {
    Array::i64(vec![1], vec![PROMPT_LEN as i64])
}

/// Attention ops with `MaskMode::Prefix` and `PositionBias::Buckets`, per entry of a conversion.
pub fn fused_prefix_bias_ops(onnx: &Path, opts: &Options) -> Result<Vec<(String, usize)>> {
    let model = OnnxModel::load(onnx)?;
    let mut out = Vec::new();
    for (name, seq) in
        [("forward", opts.bounds.values().copied().max().unwrap_or(1)), ("prefill", PROMPT_LEN), ("decode_step", 1)]
    {
        let bounds = opts.bounds.keys().map(|k| (k.clone(), seq)).collect();
        let mut g = model.instantiate(&bounds)?;
        crate::passes::run_all(&mut g)?;
        let n = g
            .nodes
            .iter()
            .filter(|n| {
                matches!(&n.op, IrOp::Rt(mote::Op::Attention(a))
                    if a.mask == MaskMode::Prefix && matches!(a.bias, PositionBias::Buckets { .. }))
            })
            .count();
        out.push((name.to_string(), n));
    }
    Ok(out)
}

/// Measures the T5 family in `dir` (`models/t5`).
pub fn evaluate_t5(dir: &Path) -> Result<T5Figures> {
    let report = T5Report::read(dir)?;
    let c = FileFigures::measure(dir, t5_options, &INPUT_NAMES)?;
    let (f32m, i8m) = (&c.f32, &c.int8);
    let held = task::examples(task::HELDOUT_SEED, report.heldout_examples);
    let a32 = greedy_answers(&f32m.bytes, &held)?;
    let a8 = greedy_answers(&i8m.bytes, &held)?;
    let (mut d32, mut d8) = (0f32, 0f32);
    for inputs in &c.goldens {
        let Data::I64(t) = &inputs[0].data else { bail!("golden tokens must be integers") };
        d32 = d32.max(decode_vs_forward(&f32m.bytes, t)?);
        d8 = d8.max(decode_vs_forward(&i8m.bytes, t)?);
    }
    Ok(T5Figures {
        scores: GreedyScores::new(&held, &a32, &a8),
        macs_per_token: i8m.entry_macs("decode_step"),
        fused_prefix_bias_ops: fused_prefix_bias_ops(&dir.join("model.onnx"), &c.int8_options)?,
        decode_vs_forward_f32: d32,
        decode_vs_forward_int8: d8,
        file: c.file,
    })
}
