//! Figures of the encoder–decoder family measured through the converter and the runtime:
//! parity with tract and candle, greedy exact match of the reversal task f32 vs int8 and
//! against the copy baseline, fusion of the three attention kinds, memory.
//!
//! Greedy decoding goes through [`greedy_answers`]: the `forward` entry recomputed once per
//! generated token (the decoder input padded to its bound; causal attention makes the padding
//! invisible). When the converter emits the `encode` + `decode_step` entries (ONNX metadata
//! `mote.decode = tgt`), [`greedy_answers_cached`] decodes with the KV cache instead and the
//! figures record whether both agree.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_encdec(std::path::Path::new("models/encdec"))?;
//! assert!(f.scores.exact_int8 > f.scores.baseline_exact);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{max_abs, zoo_options, FamilyFigures};
use crate::array::Array;
use crate::convert::{Converted, Options};
use crate::emit::dtypes::QuantMode;
use crate::host;
use crate::import::OnnxModel;
use crate::ir::IrOp;
use crate::zoo::encdec::task::{self, Example, BOS, EOS, SRC_LEN, TGT_LEN};
use crate::zoo::encdec::train::{example_inputs, read_heldout};
use crate::zoo::encdec::INPUT_NAMES;
use crate::zoo::seq2seq::figures::{argmax, FileFigures, GreedyScores};
use crate::zoo::seq2seq::TaskExample;
use anyhow::{anyhow, Result};
use mote::ops::MaskMode;
use serde::Serialize;
use std::path::Path;

/// Everything measured about an encoder–decoder folder.
#[derive(Debug, Clone, Serialize)]
pub struct EncdecFigures {
    /// The converted files: memory, golden parity, freshness.
    pub file: FileFigures,
    /// Greedy outputs of the held-out set (`forward`-based), f32 and int8, against the copy
    /// baseline.
    pub scores: GreedyScores,
    /// MACs per generated token: one `decode_step` if the file has one, else `forward` / tgt.
    pub macs_per_token: u64,
    /// Entries of the int8 file.
    pub entries: Vec<String>,
    /// Fused `Attention` ops of the `forward` graph: (encoder self with key mask, decoder
    /// causal self, cross with key mask).
    pub fused_attention: (usize, usize, usize),
    /// Converter notes of the int8 conversion (e.g. attention that runs unfused).
    pub notes: Vec<String>,
    /// Whether `encode` + `decode_step` greedy outputs equal the `forward`-based ones, f32 and
    /// int8 (`None`: the file has no such entries).
    pub cached_equals_forward: Option<(bool, bool)>,
    /// Teacher-forced `decode_step` logits vs `forward`, max-abs over the golden targets, f32 and
    /// int8 (`None`: no decode entries).
    pub decode_vs_forward: Option<(f32, f32)>,
    /// Exact match of a width-4 beam search (`mote::beam`, after `encode`, prompt `BOS`) with
    /// the int8 file (`None`: no decode entries).
    pub beam4_exact_int8: Option<f64>,
}

impl EncdecFigures {
    /// The report row: task metric = held-out exact match of greedy outputs (%).
    pub fn summary(&self) -> FamilyFigures {
        family_row!(self.file, self.macs_per_token, self.scores.metric())
    }
}

/// Options for converting a zoo encoder–decoder: `src` and `tgt` bounded by the model's
/// `mote.max_src` / `mote.max_tgt` metadata, calibration from `calib/`, decode entries on.
pub fn encdec_options(dir: &Path, quant: QuantMode) -> Result<Options> {
    let mut o = zoo_options(dir, quant, true)?;
    let onnx = OnnxModel::load(&dir.join("model.onnx"))?;
    let meta = |k: &str| -> Result<usize> {
        let v = onnx.metadata().iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        Ok(v.ok_or_else(|| anyhow!("model has no {k} metadata"))?.parse()?)
    };
    o.bounds = [("src".to_string(), meta("mote.max_src")?), ("tgt".to_string(), meta("mote.max_tgt")?)].into();
    Ok(o)
}

/// Greedy outputs (ids before `EOS`) of a `.mote` file, recomputing the `forward` entry once
/// per generated token: the one place the evaluation decodes, so it can switch to
/// [`greedy_answers_cached`].
pub fn greedy_answers(bytes: &[u8], examples: &[Example]) -> Result<Vec<Vec<u32>>> {
    let model = mote::Model::parse(bytes)?;
    let e = model.entry_by_name("forward")?;
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let out = model.tensor(model.entry_output(e, 0)?)?.desc.shape.numel();
    let v = out / TGT_LEN;
    let mut logits = vec![0f32; out];
    let mut all = Vec::with_capacity(examples.len());
    for ex in examples {
        let mut inputs = example_inputs(ex).to_vec();
        let mut tgt = vec![task::PAD as i64; TGT_LEN];
        tgt[0] = BOS as i64;
        let mut answer = Vec::new();
        for t in 0..TGT_LEN - 1 {
            inputs[2] = Array::i64(vec![1, TGT_LEN], tgt.clone());
            s.reset();
            host::set_inputs(&mut s, e, &inputs)?;
            s.run(e)?;
            s.output_f32(e, 0, &mut logits)?;
            let next = argmax(&logits[t * v..(t + 1) * v]) as u32;
            if next == EOS {
                break;
            }
            answer.push(next);
            tgt[t + 1] = next as i64;
        }
        all.push(answer);
    }
    Ok(all)
}

/// Whether the file has the `encode` and `decode_step` entries of incremental decoding.
pub fn has_decode_entries(bytes: &[u8]) -> Result<bool> {
    let model = mote::Model::parse(bytes)?;
    Ok(model.entry_by_name("encode").is_ok() && model.entry_by_name("decode_step").is_ok())
}

/// Runs `encode` on the example's source, then `decode_step` on `BOS` and each of `forced`
/// (teacher forcing) or, when `forced` is `None`, on its own greedy choices until `EOS`;
/// returns the generated ids and the logits of every step.
pub fn decode_cached(bytes: &[u8], ex: &Example, forced: Option<&[u32]>) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
    let model = mote::Model::parse(bytes)?;
    let enc = model.entry_by_name("encode").map_err(|_| anyhow!("the model has no encode entry"))?;
    let step = model.entry_by_name("decode_step").map_err(|_| anyhow!("the model has no decode_step entry"))?;
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    s.reset();
    let [src, mask, _] = example_inputs(ex);
    host::set_inputs(&mut s, enc, &[src, mask])?;
    s.run(enc)?;
    let v = model.tensor(model.entry_output(step, 0)?)?.desc.shape.numel();
    let mut row = vec![0f32; v];
    let (mut generated, mut logits) = (Vec::new(), Vec::new());
    let mut next = BOS;
    for k in 0..TGT_LEN - 1 {
        s.set_input_i32(step, 0, &[next as i32])?;
        s.run(step)?;
        s.output_f32(step, 0, &mut row)?;
        logits.push(row.clone());
        next = match forced {
            Some(f) if k < f.len() => f[k],
            Some(_) => break,
            None => argmax(&row) as u32,
        };
        if forced.is_none() && next == EOS {
            break;
        }
        generated.push(next);
    }
    Ok((generated, logits))
}

/// Greedy outputs with `encode` + KV-cached `decode_step`.
pub fn greedy_answers_cached(bytes: &[u8], examples: &[Example]) -> Result<Vec<Vec<u32>>> {
    examples.iter().map(|e| Ok(decode_cached(bytes, e, None)?.0)).collect()
}

/// Beam-search outputs (ids before `EOS`): `encode`, then [`mote::beam::beam_search`] of
/// `width` beams from the prompt `BOS`, stopping at `EOS`.
pub fn beam_answers(bytes: &[u8], examples: &[Example], width: usize) -> Result<Vec<Vec<u32>>> {
    let model = mote::Model::parse(bytes)?;
    let enc = model.entry_by_name("encode").map_err(|_| anyhow!("the model has no encode entry"))?;
    let step = model.entry_by_name("decode_step").map_err(|_| anyhow!("the model has no decode_step entry"))?;
    let vocab = model.tensor(model.entry_output(step, 0)?)?.desc.shape.numel();
    let max_new = TGT_LEN - 1;
    let (sn, ln, tn) = mote::beam::BeamMemory::sizes(width, model.state_bytes(), vocab, max_new);
    let (mut states, mut logits, mut tokens) = (vec![0u8; sn], vec![0f32; ln], vec![0i32; tn]);
    let mut mem = host::Memory::for_model(&model);
    let mut s = mote::Session::new(&model, &mut mem.arena, &mut mem.state)?;
    let mut out = vec![0i32; max_new];
    let mut all = Vec::with_capacity(examples.len());
    for ex in examples {
        s.reset();
        let [src, mask, _] = example_inputs(ex);
        host::set_inputs(&mut s, enc, &[src, mask])?;
        s.run(enc)?;
        let mut bm = mote::beam::BeamMemory { states: &mut states, logits: &mut logits, tokens: &mut tokens };
        let o = mote::beam::beam_search(&mut s, &[BOS as i32], width, max_new, Some(EOS as i32), &mut bm, &mut out)?;
        all.push(out[..o.len].iter().map(|&t| t as u32).take_while(|&t| t != EOS).collect());
    }
    Ok(all)
}

/// Max-abs difference between the `forward` logits of an example (teacher forced) and the
/// `encode` + `decode_step` logits at the same positions.
pub fn decode_vs_forward(bytes: &[u8], ex: &Example) -> Result<f32> {
    let full = host::run(bytes, "forward", &example_inputs(ex))?.remove(0).to_f32();
    let v = full.len() / TGT_LEN;
    let answer = ex.answer();
    let (_, steps) = decode_cached(bytes, ex, Some(&answer))?;
    Ok(steps.iter().enumerate().fold(0f32, |w, (p, l)| w.max(max_abs(l, &full[p * v..(p + 1) * v]))))
}

/// Fused attention ops of the `forward` graph: (encoder self-attention with a key mask,
/// decoder causal self-attention, cross-attention with a key mask).
pub fn fused_attention(onnx: &Path, opts: &Options) -> Result<(usize, usize, usize)> {
    let mut g = OnnxModel::load(onnx)?.instantiate(&opts.bounds)?;
    crate::passes::run_all(&mut g)?;
    let (mut enc, mut causal, mut cross) = (0, 0, 0);
    for n in &g.nodes {
        if let IrOp::Rt(mote::Op::Attention(a)) = &n.op {
            let (sq, skv) = (g.tensors[n.inputs[0]].shape[1], g.tensors[n.inputs[1]].shape[1]);
            match (a.mask, a.key_mask) {
                (MaskMode::None, true) if sq == SRC_LEN && sq == skv => enc += 1,
                (MaskMode::Causal, false) => causal += 1,
                (MaskMode::None, true) if sq == TGT_LEN && skv == SRC_LEN => cross += 1,
                _ => {}
            }
        }
    }
    Ok((enc, causal, cross))
}

/// Measures the encoder–decoder family in `dir` (`models/encdec`).
pub fn evaluate_encdec(dir: &Path) -> Result<EncdecFigures> {
    let c = FileFigures::measure(dir, encdec_options, &INPUT_NAMES)?;
    let (f32m, i8m) = (&c.f32, &c.int8);
    let held = read_heldout(dir)?;
    let a32 = greedy_answers(&f32m.bytes, &held)?;
    let a8 = greedy_answers(&i8m.bytes, &held)?;
    let (cached_equals_forward, decode_vs_fwd, beam4_exact_int8) = if has_decode_entries(&i8m.bytes)? {
        let probe = &held[..held.len().min(100)];
        let c32 = greedy_answers_cached(&f32m.bytes, probe)? == a32[..probe.len()];
        let c8 = greedy_answers_cached(&i8m.bytes, probe)? == a8[..probe.len()];
        let (mut d32, mut d8) = (0f32, 0f32);
        for e in Example::goldens() {
            d32 = d32.max(decode_vs_forward(&f32m.bytes, &e)?);
            d8 = d8.max(decode_vs_forward(&i8m.bytes, &e)?);
        }
        let beam = task::score(&held, &beam_answers(&i8m.bytes, &held, 4)?).0;
        (Some((c32, c8)), Some((d32, d8)), Some(beam))
    } else {
        (None, None, None)
    };
    let macs = |c: &Converted| {
        let of = |n: &str| c.inspection.entries.iter().find(|e| e.entry == n).map(|e| e.macs);
        of("decode_step").unwrap_or_else(|| of("forward").unwrap_or(0) / TGT_LEN as u64)
    };
    Ok(EncdecFigures {
        scores: GreedyScores::new(&held, &a32, &a8),
        macs_per_token: macs(i8m),
        entries: i8m.inspection.entries.iter().map(|e| e.entry.clone()).collect(),
        fused_attention: fused_attention(&dir.join("model.onnx"), &c.int8_options)?,
        notes: i8m.inspection.notes.clone(),
        cached_equals_forward,
        decode_vs_forward: decode_vs_fwd,
        beam4_exact_int8,
        file: c.file,
    })
}
