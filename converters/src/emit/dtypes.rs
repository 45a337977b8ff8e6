//! Chooses the storage dtype and quantisation of every tensor for a quantisation mode.

use crate::ir::{Elem, Graph, IrOp, TId};
use crate::state_io;
use anyhow::{anyhow, Result};
use mote::{DType, Op, Quant};
use std::collections::HashMap;

/// Weight and activation precision requested by `--quant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum QuantMode {
    /// Everything f32.
    F32,
    /// f16 weights for MatMul and embedding tables, f32 activations.
    F16,
    /// TFLite-style int8: per-channel weights, int8 activations around every integer kernel.
    Int8,
}

/// Observed real range of each activation, keyed by tensor name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// Asymmetric int8 parameters covering `[lo, hi]` (always including zero).
pub fn activation_quant(lo: f32, hi: f32) -> Quant {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
    Quant { scale, zero_point }
}

/// How each tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Storage {
    /// Element type.
    pub dtype: DType,
    /// Per-tensor quantisation (activations).
    pub quant: Quant,
}

fn is_layout(op: &IrOp) -> bool {
    matches!(op, IrOp::Rt(Op::Reshape | Op::Transpose { .. } | Op::Slice { .. } | Op::Concat { .. }))
}

/// Assigns activation dtypes: in int8 mode a float activation is int8 when an integer
/// kernel produces or consumes it (MatMul, fused attention), f32 elsewhere (the residual
/// stream, norms' inputs); layout ops and stores keep their input's encoding; entry outputs
/// stay f32. `slots` pins the storage of state slots another entry already wrote (by slot
/// name), so a `LoadState` reads exactly what the earlier `StoreState` stored.
pub fn assign(
    g: &Graph,
    mode: QuantMode,
    ranges: Option<&Ranges>,
    slots: &HashMap<String, Storage>,
) -> Result<HashMap<TId, Storage>> {
    let f32s = Storage { dtype: DType::F32, quant: Quant::NONE };
    let mut out = HashMap::new();
    let mut wants_i8 = vec![false; g.tensors.len()];
    // Recurrent state (`state.*`) keeps full precision and one encoding for its load and its
    // store; other slots (encoder results) keep their activation's encoding.
    let mut keep_f32 = vec![false; g.tensors.len()];
    for n in &g.nodes {
        if state_io::slot_name(g, n).is_some_and(|s| s.starts_with(state_io::PREFIX)) {
            for &t in n.inputs.iter().chain([&n.output]) {
                keep_f32[t] = true;
            }
        }
    }
    // A top-1 MoE block reads and writes f32 activations (its math is f32).
    for n in &g.nodes {
        if let IrOp::Rt(Op::Moe { .. }) = n.op {
            keep_f32[n.inputs[0]] = true;
            keep_f32[n.output] = true;
        }
    }
    if mode == QuantMode::Int8 {
        for n in &g.nodes {
            match &n.op {
                IrOp::Rt(Op::MatMul { .. }) => {
                    wants_i8[n.inputs[0]] = true;
                    wants_i8[n.output] = true;
                }
                IrOp::Rt(Op::Attention(_)) => {
                    for &i in &n.inputs[..3] {
                        wants_i8[i] = true;
                    }
                    wants_i8[n.output] = true;
                }
                _ => {}
            }
        }
    }
    let quant_of = |t: TId| -> Result<Quant> {
        let name = &g.tensors[t].name;
        let r = ranges.and_then(|r| r.get(name)).ok_or_else(|| anyhow!("no calibration range for tensor '{name}'"))?;
        Ok(activation_quant(r.0, r.1))
    };
    for (t, tensor) in g.tensors.iter().enumerate() {
        if tensor.konst.is_some() {
            continue;
        }
        let s = match tensor.elem {
            Elem::Int => Storage { dtype: DType::I32, quant: Quant::NONE },
            Elem::Float if wants_i8[t] && !keep_f32[t] && !g.outputs.contains(&t) => {
                Storage { dtype: DType::I8, quant: quant_of(t)? }
            }
            Elem::Float => f32s,
        };
        out.insert(t, s);
    }
    for n in &g.nodes {
        if let Some(&s) = state_io::slot_name(g, n).filter(|_| n.inputs.is_empty()).and_then(|s| slots.get(&s)) {
            out.insert(n.output, s);
        }
        let float = g.tensors[n.output].elem == Elem::Float;
        let passes_on = is_layout(&n.op) || matches!(n.op, IrOp::Rt(Op::StoreState { .. }));
        if passes_on && !g.outputs.contains(&n.output) && !keep_f32[n.output] && float {
            if let Some(&s) = out.get(&n.inputs[0]) {
                out.insert(n.output, s);
            }
        }
    }
    Ok(out)
}
