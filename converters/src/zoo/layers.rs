//! Zoo layers: each one trains in candle ([`ZooLayer::forward`]) and writes itself as ONNX
//! ([`ZooLayer::export`]), so the trained and the exported graph are the same computation.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::layers::{Linear, Params, ZooLayer};
//! use mote_converters::zoo::onnx_builder::GraphBuilder;
//! let mut p = Params::new(1);
//! let lin = Linear::new(&mut p, "fc", 4, 3, 0.1)?;
//! let y = lin.forward(&Tensor::ones((2, 4), candle_core::DType::F32, &Device::Cpu)?)?;
//! assert_eq!(y.dims(), &[2, 3]);
//! let mut g = GraphBuilder::new("g");
//! let out = lin.export(&mut g, "x")?;
//! assert!(g.has_value(&out));
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use prost::Message;

use super::onnx_builder::{attr_int, attr_ints, GraphBuilder};
use super::rng::SplitMix64;

/// A layer that can both run in candle and append itself to an ONNX graph.
pub trait ZooLayer {
    /// The candle forward pass (training and reference inference).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;
    /// Appends this layer's ONNX nodes and initializers reading `input`; returns the output
    /// value name. The exported graph uses batch 1.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String>;
}

/// One trainable tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// Export / report name, e.g. `h.0.attn.q.weight`.
    pub name: String,
    /// The candle variable.
    pub var: Var,
    /// Whether AdamW weight decay applies (matrices yes; biases, norms no).
    pub decay: bool,
}

/// Creates and collects parameters, initialised from a deterministic PRNG.
#[derive(Debug)]
pub struct Params {
    params: Vec<Param>,
    rng: SplitMix64,
    device: Device,
}

impl Params {
    /// An empty store on the CPU whose initialisers draw from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { params: Vec::new(), rng: SplitMix64::new(seed), device: Device::Cpu }
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn push(&mut self, name: &str, data: Vec<f32>, shape: &[usize], decay: bool) -> Result<Var> {
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?)?;
        self.params.push(Param { name: name.to_string(), var: var.clone(), decay });
        Ok(var)
    }

    /// A normal(0, std) parameter.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64, decay: bool) -> Result<Var> {
        let data = self.rng.normal_vec(shape.iter().product(), std);
        self.push(name, data, shape, decay)
    }

    /// A constant parameter (no weight decay).
    pub fn constant(&mut self, name: &str, shape: &[usize], v: f32) -> Result<Var> {
        self.push(name, vec![v; shape.iter().product()], shape, false)
    }

    /// All parameters in creation order.
    pub fn all(&self) -> &[Param] {
        &self.params
    }

    /// Overwrites every parameter with the f32 initializer of the same name in the ONNX file at
    /// `path`; parameters for which `transposed` holds are 2-D weights stored as `[in, out]`
    /// (how [`Linear`] exports them).
    pub fn load_onnx_initializers(&self, path: &Path, transposed: &dyn Fn(&Param) -> bool) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let model = tract_onnx::pb::ModelProto::decode(&bytes[..])?;
        let graph = model.graph.context("ONNX file without a graph")?;
        let inits: HashMap<&str, &tract_onnx::pb::TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        for p in &self.params {
            let Some(t) = inits.get(p.name.as_str()) else { bail!("{}: no initializer {}", path.display(), p.name) };
            let v: Vec<f32> =
                t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            ensure!(v.len() == p.var.elem_count(), "{}: {} has {} values", path.display(), p.name, v.len());
            let value = if transposed(p) {
                let (r, c) = p.var.dims2()?;
                Tensor::from_vec(v, (c, r), &self.device)?.t()?.contiguous()?
            } else {
                Tensor::from_vec(v, p.var.shape(), &self.device)?
            };
            p.var.set(&value)?;
        }
        Ok(())
    }

    /// Copies the values of `other`, a store of the same architecture, into this one.
    pub fn copy_from(&self, other: &Params) -> Result<()> {
        ensure!(
            self.params.len() == other.params.len(),
            "{} parameters from {}",
            self.params.len(),
            other.params.len()
        );
        for (dst, src) in self.params.iter().zip(&other.params) {
            dst.var.set(&src.var.as_tensor().copy()?)?;
        }
        Ok(())
    }

    /// The variables with (`true`) or without (`false`) weight decay.
    pub fn vars(&self, decay: bool) -> Vec<Var> {
        self.params.iter().filter(|p| p.decay == decay).map(|p| p.var.clone()).collect()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Overwrites every parameter with normal(0, std) noise (for export-parity tests).
    pub fn randomize(&mut self, std: f64) -> Result<()> {
        for p in &self.params {
            let data = self.rng.normal_vec(p.var.elem_count(), std);
            p.var.set(&Tensor::from_vec(data, p.var.shape(), &self.device)?)?;
        }
        Ok(())
    }
}

/// Row-major f32 contents of a tensor.
pub fn tensor_data(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

fn dims_i64(t: &Tensor) -> Vec<i64> {
    t.dims().iter().map(|&d| d as i64).collect()
}

/// Adds `t` as an f32 initializer named `name`.
///
/// Exporting the same parameter name again returns the first initializer, so a layer whose
/// weights are shared across depth (ALBERT) is stored once in the ONNX file and every use
/// reads the same initializer, as in a PyTorch export. Parameter names are unique per model,
/// so a second export under the same name is always the same tensor.
pub fn export_tensor(g: &mut GraphBuilder, name: &str, t: &Tensor) -> Result<String> {
    let key = format!("param:{name}");
    if let Some(existing) = g.lookup(&key) {
        return Ok(existing);
    }
    let value = g.initializer_f32(name, &dims_i64(t), &tensor_data(t)?);
    g.bind(&key, &value);
    Ok(value)
}

/// Token embedding table `[vocab, dim]`; input ids of any shape, output `ids.shape + [dim]`.
#[derive(Clone, Debug)]
pub struct Embedding {
    name: String,
    weight: Var,
}

impl Embedding {
    /// A `[vocab, dim]` table initialised with normal(0, std).
    pub fn new(p: &mut Params, name: &str, vocab: usize, dim: usize, std: f64) -> Result<Self> {
        let weight = p.normal(&format!("{name}.weight"), &[vocab, dim], std, false)?;
        Ok(Self { name: name.to_string(), weight })
    }

    /// The `[vocab, dim]` table (e.g. for an output layer tied to it).
    pub fn weight(&self) -> &Var {
        &self.weight
    }
}

impl ZooLayer for Embedding {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.weight.dim(1)?);
        self.weight.as_tensor().index_select(&ids.flatten_all()?, 0)?.reshape(dims)
    }

    /// `Gather(weight, ids)` (axis 0).
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let w = export_tensor(g, &format!("{}.weight", self.name), &self.weight)?;
        g.push_scope(&self.name);
        let out = g.op("Gather", &[&w, input], vec![attr_int("axis", 0)]);
        g.pop_scope();
        Ok(out)
    }
}

/// A dense layer `y = x Wᵀ + b` with `W` stored `[out, in]` (candle convention).
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Var,
    bias: Var,
}

impl Linear {
    /// A layer with normal(0, std) weights and zero bias.
    pub fn new(p: &mut Params, name: &str, d_in: usize, d_out: usize, std: f64) -> Result<Self> {
        let weight = p.normal(&format!("{name}.weight"), &[d_out, d_in], std, true)?;
        let bias = p.constant(&format!("{name}.bias"), &[d_out], 0.0)?;
        Ok(Self { name: name.to_string(), weight, bias })
    }
}

impl ZooLayer for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let d_in = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / d_in.max(1);
        let y = x.reshape((rows, d_in))?.matmul(&self.weight.as_tensor().t()?)?.broadcast_add(self.bias.as_tensor())?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.weight.dim(0)?;
        }
        y.reshape(out)
    }

    /// `MatMul(x, W[in,out]) → Add(b)`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        self.export_as(g, input, None)
    }
}

impl Linear {
    /// Like [`ZooLayer::export`], optionally naming the output value (e.g. `"logits"`).
    pub fn export_as(&self, g: &mut GraphBuilder, input: &str, output: Option<&str>) -> Result<String> {
        let wt = self.weight.as_tensor().t()?.contiguous()?;
        let w = export_tensor(g, &format!("{}.weight", self.name), &wt)?;
        let b = export_tensor(g, &format!("{}.bias", self.name), &self.bias)?;
        g.push_scope(&self.name);
        let y = g.op("MatMul", &[input, &w], vec![]);
        let y = match output {
            Some(name) => g.op_named("Add", &[&y, &b], vec![], name),
            None => g.op("Add", &[&y, &b], vec![]),
        };
        g.pop_scope();
        Ok(y)
    }
}

/// Layer normalisation over the last axis, written out with differentiable tensor ops.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    name: String,
    gamma: Var,
    beta: Var,
    eps: f32,
}

impl LayerNorm {
    /// `gamma = 1`, `beta = 0`.
    pub fn new(p: &mut Params, name: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            gamma: p.constant(&format!("{name}.weight"), &[dim], 1.0)?,
            beta: p.constant(&format!("{name}.bias"), &[dim], 0.0)?,
            eps,
        })
    }
}

impl ZooLayer for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let d = x.broadcast_sub(&mean)?;
        let var = d.sqr()?.mean_keepdim(D::Minus1)?;
        let denom = (var + self.eps as f64)?.sqrt()?;
        d.broadcast_div(&denom)?.broadcast_mul(self.gamma.as_tensor())?.broadcast_add(self.beta.as_tensor())
    }

    /// PyTorch legacy decomposition: ReduceMean → Sub → Pow 2 → ReduceMean → Add eps → Sqrt →
    /// Div → Mul γ → Add β.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let gamma = export_tensor(g, &format!("{}.weight", self.name), &self.gamma)?;
        let beta = export_tensor(g, &format!("{}.bias", self.name), &self.beta)?;
        g.push_scope(&self.name);
        let reduce = || vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)];
        let mean = g.op("ReduceMean", &[input], reduce());
        let d = g.op("Sub", &[input, &mean], vec![]);
        let two = g.const_f32_scalar(2.0);
        let sq = g.op("Pow", &[&d, &two], vec![]);
        let var = g.op("ReduceMean", &[&sq], reduce());
        let eps = g.const_f32_scalar(self.eps);
        let v = g.op("Add", &[&var, &eps], vec![]);
        let s = g.op("Sqrt", &[&v], vec![]);
        let n = g.op("Div", &[&d, &s], vec![]);
        let y = g.op("Mul", &[&n, &gamma], vec![]);
        let y = g.op("Add", &[&y, &beta], vec![]);
        g.pop_scope();
        Ok(y)
    }
}

/// Exact (erf) GELU.
#[derive(Clone, Debug, Default)]
pub struct Gelu;

impl ZooLayer for Gelu {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.gelu_erf()
    }

    /// `Div(x, √2) → Erf → Add 1 → Mul(x, ·) → Mul(·, 0.5)`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        g.push_scope("gelu");
        let sqrt2 = g.const_f32_scalar(std::f32::consts::SQRT_2); // 1.4142135
        let one = g.const_f32_scalar(1.0);
        let half = g.const_f32_scalar(0.5);
        let t = g.op("Div", &[input, &sqrt2], vec![]);
        let t = g.op("Erf", &[&t], vec![]);
        let t = g.op("Add", &[&t, &one], vec![]);
        let t = g.op("Mul", &[input, &t], vec![]);
        let y = g.op("Mul", &[&t, &half], vec![]);
        g.pop_scope();
        Ok(y)
    }
}

/// Position-wise feed-forward: Linear → GELU → Linear.
#[derive(Clone, Debug)]
pub struct Mlp {
    fc1: Linear,
    act: Gelu,
    fc2: Linear,
}

impl Mlp {
    /// `d → hidden → d`; `out_std` initialises the output projection.
    pub fn new(p: &mut Params, name: &str, d: usize, hidden: usize, std: f64, out_std: f64) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(p, &format!("{name}.fc1"), d, hidden, std)?,
            act: Gelu,
            fc2: Linear::new(p, &format!("{name}.fc2"), hidden, d, out_std)?,
        })
    }
}

impl ZooLayer for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let h = self.fc1.export(g, input)?;
        let h = self.act.export(g, &h)?;
        self.fc2.export(g, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::onnx_builder::{DataType, Dim};
    use crate::zoo::tract_run::run_tract_f32;

    fn check_layer(layer: &dyn ZooLayer, x: &Tensor) -> Result<()> {
        let want = tensor_data(&layer.forward(x)?)?;
        let dims: Vec<Dim> = x.dims().iter().map(|&d| Dim::Fixed(d as i64)).collect();
        let mut g = GraphBuilder::new("layer");
        g.input("x", DataType::Float, &dims);
        let y = layer.export(&mut g, "x")?;
        let out_dims: Vec<Dim> = layer.forward(x)?.dims().iter().map(|&d| Dim::Fixed(d as i64)).collect();
        g.output(&y, DataType::Float, &out_dims);
        let got = run_tract_f32(&g.finish(), x)?;
        assert_eq!(want.len(), got.len());
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn layers_match_tract() -> Result<()> {
        let mut p = Params::new(11);
        let lin = Linear::new(&mut p, "lin", 8, 5, 0.5)?;
        let ln = LayerNorm::new(&mut p, "ln", 8, 1e-5)?;
        let mlp = Mlp::new(&mut p, "mlp", 8, 16, 0.5, 0.5)?;
        p.randomize(0.7)?;
        let mut r = SplitMix64::new(5);
        let x = Tensor::from_vec(r.normal_vec(24, 2.0), (1, 3, 8), &Device::Cpu)?;
        check_layer(&lin, &x)?;
        check_layer(&ln, &x)?;
        check_layer(&Gelu, &x)?;
        check_layer(&mlp, &x)?;
        Ok(())
    }
}
