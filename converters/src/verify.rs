//! Reference outputs from tract and error figures against them.

use crate::array::{Array, Data};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// Runs the ONNX model in tract with its symbolic dims bound to the inputs' shapes.
pub fn tract_reference(onnx: &Path, inputs: &[Array]) -> Result<Vec<Array>> {
    let mut model =
        tract_onnx::onnx().model_for_path(onnx).map_err(|e| anyhow!("tract cannot load {}: {e:?}", onnx.display()))?;
    let mut tensors: TVec<TValue> = tvec!();
    for (i, a) in inputs.iter().enumerate() {
        let fact = model.input_fact(i)?.clone();
        let dt = fact.datum_type.concretize().unwrap_or(f32::datum_type());
        let t: Tensor = match &a.data {
            Data::F32(v) => tract_ndarray::ArrayD::from_shape_vec(a.shape.clone(), v.clone())?.into(),
            Data::I64(v) => tract_ndarray::ArrayD::from_shape_vec(a.shape.clone(), v.clone())?.into(),
        };
        let t = t.cast_to_dt(dt)?.into_owned();
        model.set_input_fact(i, InferenceFact::dt_shape(dt, a.shape.clone()))?;
        tensors.push(t.into());
    }
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow!("tract cannot prepare the model: {e:?}"))?;
    let out = plan.run(tensors).map_err(|e| anyhow!("tract failed to run the model: {e:?}"))?;
    out.iter()
        .map(|t| {
            let t = t.cast_to::<f32>().context("non-float output")?;
            let v = t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            Ok(Array::f32(t.shape().to_vec(), v))
        })
        .collect()
}

/// Error figures between a result and a reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Largest absolute difference divided by the reference's largest magnitude.
    pub max_rel: f32,
    /// Cosine similarity of the flattened tensors.
    pub cosine: f32,
    /// Elements compared.
    pub n: usize,
}

/// Compares `got` against `want`.
pub fn compare(got: &[f32], want: &[f32]) -> Result<Comparison> {
    if got.len() != want.len() {
        bail!("output has {} values, reference has {}", got.len(), want.len());
    }
    let mut max_abs = 0f32;
    let (mut dot, mut ng, mut nw, mut scale) = (0f64, 0f64, 0f64, 0f32);
    for (&g, &w) in got.iter().zip(want) {
        max_abs = max_abs.max((g - w).abs());
        scale = scale.max(w.abs());
        dot += g as f64 * w as f64;
        ng += g as f64 * g as f64;
        nw += w as f64 * w as f64;
    }
    let cosine = if ng == 0.0 && nw == 0.0 { 1.0 } else { (dot / (ng.sqrt() * nw.sqrt()).max(1e-30)) as f32 };
    Ok(Comparison { max_abs, max_rel: max_abs / scale.max(1e-12), cosine, n: got.len() })
}
