//! Figures of the Switch Transformer family measured through the converter and the runtime:
//! parity with tract, held-out loss f32 vs int8, fused `Moe` ops and their MACs, decoding.
//!
//! ```no_run
//! let f = mote_converters::family::evaluate_switch(std::path::Path::new("models/switch"))?;
//! assert!(f.macs_per_token < f.macs_per_token_all_experts);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{
    decode_vs_forward, golden_parity, gpt_options, host_samples, memory_figures, stored_params, FamilyFigures,
    TaskMetric,
};
use crate::array::Array;
use crate::convert::{self, Converted};
use crate::emit::dtypes::QuantMode;
use crate::eval;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// Everything measured about `models/switch`.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchFigures {
    /// Real-valued weights stored in the f32 file.
    pub params: usize,
    /// f32 file bytes.
    pub flash_f32: usize,
    /// int8 file bytes.
    pub flash_int8: usize,
    /// int8 arena bytes (peak over entries).
    pub arena_int8: usize,
    /// Largest per-entry lower bound of the int8 plan.
    pub lower_bound_int8: usize,
    /// KV-cache state bytes (int8).
    pub state_int8: usize,
    /// Fused `Moe` ops in the int8 `forward` entry.
    pub moe_ops: usize,
    /// Storage dtypes of the int8 file's `Moe` operands (x, router, router bias, w1, b1, w2,
    /// b2) and output, e.g. `["F32", "F32", "F32", "F16", "F32", "F16", "F32", "F32"]`.
    pub moe_dtypes_int8: Vec<String>,
    /// MACs of one int8 `decode_step` (the runtime's count: router + one expert per layer).
    pub macs_per_token: u64,
    /// MACs of the `Moe` ops of one `decode_step`.
    pub moe_macs_per_token: u64,
    /// The same step with every expert run for every token (dense formulation).
    pub macs_per_token_all_experts: u64,
    /// f32 `.mote` against tract on the golden inputs.
    pub f32_vs_tract_max_abs: f32,
    /// f32 `.mote` against candle's golden outputs.
    pub f32_vs_candle_max_abs: f32,
    /// Held-out positions scored.
    pub heldout_positions: usize,
    /// Held-out loss of the f32 `.mote` (nats/char).
    pub loss_f32: f64,
    /// Held-out loss of the int8 `.mote`.
    pub loss_int8: f64,
    /// Next-token argmax agreement of int8 with f32.
    pub top1_agreement: f64,
    /// Incremental decoding vs the full pass, f32 (max-abs).
    pub decode_vs_forward_f32: f32,
    /// Incremental decoding vs the full pass, int8 (max-abs).
    pub decode_vs_forward_int8: f32,
    /// Whether the committed `model.int8.mote` equals a fresh conversion byte for byte.
    pub committed_int8_up_to_date: bool,
    /// Greedy generations of the int8 model on the host runtime.
    pub samples: Vec<(String, String)>,
}

impl SwitchFigures {
    /// The report row: task metric = held-out next-char loss.
    pub fn summary(&self) -> FamilyFigures {
        family_row!(
            self,
            self.macs_per_token,
            TaskMetric { name: "loss nats/char".into(), f32: self.loss_f32, int8: self.loss_int8 }
        )
    }
}

/// `(Moe ops, their MACs, their MACs if all experts ran, operand dtypes)` of `entry`.
fn moe_macs(bytes: &[u8], entry: &str) -> Result<(usize, u64, u64, Vec<String>)> {
    let m = mote::Model::parse(bytes)?;
    let info = m.entry(m.entry_by_name(entry)?)?;
    let (mut n, mut macs, mut dense, mut dtypes) = (0, 0u64, 0u64, Vec::new());
    for i in info.first_op as usize..(info.first_op + info.n_ops) as usize {
        let op = m.op(i)?;
        let mote::Op::Moe { .. } = op.op else { continue };
        let mut descs = Vec::new();
        for k in 0..op.n_inputs {
            descs.push(m.tensor(m.op_input(&op, k)?)?.desc);
        }
        let out = m.tensor(m.op_output(&op)?)?.desc;
        let k = mote::kernels::macs(&op.op, &descs, &out);
        let (d, ex, f) = (out.shape.last() as u64, descs[1].shape.dim(0) as u64, descs[3].shape.dim(1) as u64);
        let tokens = out.shape.numel() as u64 / d.max(1);
        n += 1;
        macs += k;
        dense += k + tokens * (ex - 1) * 2 * f * d;
        dtypes = descs.iter().chain([&out]).map(|d| format!("{:?}", d.dtype)).collect();
    }
    Ok((n, macs, dense, dtypes))
}

/// Measures the Switch family in `dir` (`models/switch`).
pub fn evaluate_switch(dir: &Path) -> Result<SwitchFigures> {
    let onnx = dir.join("model.onnx");
    let f32m: Converted = convert::convert(&onnx, &gpt_options(dir, QuantMode::F32)?)?;
    let i8m: Converted = convert::convert(&onnx, &gpt_options(dir, QuantMode::Int8)?)?;
    let params = stored_params(&f32m.bytes)?;

    let (vs_tract, vs_candle, golden_tokens) = golden_parity(&onnx, &f32m.bytes, dir)?;

    let heldout = Array::read_npy(&dir.join("heldout.npy")).context("held-out windows")?;
    let e32 = eval::lm_eval(&f32m.bytes, &heldout)?;
    let e8 = eval::lm_eval(&i8m.bytes, &heldout)?;

    let samples = host_samples(&i8m.bytes)?;
    let (moe_ops, _, _, moe_dtypes_int8) = moe_macs(&i8m.bytes, "forward")?;
    let (_, moe_macs_per_token, moe_dense) = {
        let (n, m, d, _) = moe_macs(&i8m.bytes, "decode_step")?;
        (n, m, d)
    };
    let macs_per_token = i8m.entry_macs("decode_step");
    let committed = std::fs::read(dir.join("model.int8.mote")).unwrap_or_default();
    let (flash_f32, flash_int8, arena_int8, lower_bound_int8, state_int8) = memory_figures(&f32m, &i8m);
    Ok(SwitchFigures {
        params,
        flash_f32,
        flash_int8,
        arena_int8,
        lower_bound_int8,
        state_int8,
        moe_ops,
        moe_dtypes_int8,
        macs_per_token,
        moe_macs_per_token,
        macs_per_token_all_experts: macs_per_token - moe_macs_per_token + moe_dense,
        f32_vs_tract_max_abs: vs_tract,
        f32_vs_candle_max_abs: vs_candle,
        heldout_positions: e32.positions,
        loss_f32: e32.loss,
        loss_int8: e8.loss,
        top1_agreement: eval::top1_agreement(&e8, &e32),
        decode_vs_forward_f32: decode_vs_forward(&f32m.bytes, &golden_tokens)?,
        decode_vs_forward_int8: decode_vs_forward(&i8m.bytes, &golden_tokens)?,
        committed_int8_up_to_date: committed == i8m.bytes,
        samples,
    })
}
