//! Layers both sequence-to-sequence stacks build from (besides
//! [`ProjectedAttention`](crate::zoo::attention::ProjectedAttention)): the residual add scoped
//! under its block ([`export_residual`]) and batches of token ids ([`ids_batch`]).

use candle_core::{Device, Tensor};

use crate::zoo::onnx_builder::GraphBuilder;

/// Residual add `a + b` scoped under `name`.
pub fn export_residual(g: &mut GraphBuilder, name: &str, a: &str, b: &str) -> String {
    g.push_scope(name);
    let y = g.op("Add", &[a, b], vec![]);
    g.pop_scope();
    y
}

/// Token ids `[B, S]` from equal-length rows.
pub fn ids_batch(rows: &[Vec<u32>]) -> candle_core::Result<Tensor> {
    let s = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu)
}

/// Test support: runs the ONNX model `model` in tract on int64 inputs `(shape, values)` and
/// returns the max-abs difference of its first output from `want` (which must be as long).
#[cfg(test)]
pub(crate) fn tract_max_abs(model: &[u8], inputs: &[(&[usize], Vec<i64>)], want: &[f32]) -> anyhow::Result<f32> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx().model_for_read(&mut &model[..])?.into_optimized()?.into_runnable()?;
    let values = inputs
        .iter()
        .map(|(shape, v)| Ok(tract_onnx::prelude::Tensor::from_shape(shape, v)?.into_tvalue()))
        .collect::<anyhow::Result<TVec<TValue>>>()?;
    let out = plan.run(values)?;
    let got: Vec<f32> = out[0].to_plain_array_view::<f32>()?.iter().copied().collect();
    anyhow::ensure!(want.len() == got.len(), "tract gives {} values, candle {}", got.len(), want.len());
    Ok(crate::family::max_abs(want, &got))
}
