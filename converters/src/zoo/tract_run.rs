//! Running an exported ONNX model in tract (reference checks and tests).
//!
//! ```no_run
//! # let onnx: Vec<u8> = vec![];
//! let (shape, logits) = mote_converters::zoo::tract_run::run_tract_i64(&onnx, &[1, 2], &[1, 2])?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::Result;
use tract_onnx::prelude::*;

fn run(onnx: &[u8], input: tract_onnx::prelude::Tensor) -> Result<(Vec<usize>, Vec<f32>)> {
    let plan = tract_onnx::onnx().model_for_read(&mut &onnx[..])?.into_optimized()?.into_runnable()?;
    let out = plan.run(tvec!(input.into_tvalue()))?;
    let view = out[0].to_plain_array_view::<f32>()?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

/// Runs a single-f32-input model; returns the first output flattened.
pub fn run_tract_f32(onnx: &[u8], x: &candle_core::Tensor) -> Result<Vec<f32>> {
    let data = crate::zoo::layers::tensor_data(x)?;
    let t = tract_onnx::prelude::Tensor::from_shape(x.dims(), &data)?;
    Ok(run(onnx, t)?.1)
}

/// Runs a single-i64-input model; returns the first output's shape and data.
pub fn run_tract_i64(onnx: &[u8], ids: &[i64], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>)> {
    run(onnx, tract_onnx::prelude::Tensor::from_shape(shape, ids)?)
}
