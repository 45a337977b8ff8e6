//! Affine autoregressive normalizing flows in both directions: MAF, IAF and
//! Parallel-WaveNet-style probability-density distillation of a MAF teacher into an IAF student.
//!
//! Every layer is one MADE (masked autoencoder for distribution estimation) that computes a shift
//! `μ` and a log-scale `α` per coordinate, with `x_i = z_i·exp(α_i) + μ_i`. The coordinate with
//! degree `d` (its place in the layer's order) may only see coordinates of lower degree; odd
//! layers reverse the order. The masks are constant tensors multiplied into the weights while
//! training and baked into them at export, so the ONNX files hold plain dense weights with
//! exact zeros where the mask says so.
//!
//! - MAF conditions the MADE on the data side: `forward` (data → latent, log-density) is one pass
//!   per layer, `inverse` (latent → data, a sample) takes `D` passes per layer.
//! - IAF conditions it on the latent side: `inverse` (sampling) is one pass per layer, `forward`
//!   (density of arbitrary data) takes `D` passes.
//!
//! Both directions are exported as separate ONNX graphs (`forward.onnx`: `x [n, D]` →
//! `z [n, D]`, `log_prob [n, 1]`; `inverse.onnx`: `z [n, D]` → `x [n, D]`) over the same
//! initializers, and the sequential direction is unrolled in the graph: that is its honest cost.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::autoregressive::{Flow, FlowConfig, FlowKind};
//! let cfg = FlowConfig { layers: 2, hidden: 16, ..FlowConfig::new(FlowKind::Maf, 4) };
//! let flow = Flow::new(cfg, 0)?;
//! let x = Tensor::new(&[[0.1f32, -0.3, 0.5, 1.0]], &Device::Cpu)?;
//! let (z, logp) = flow.forward(&x)?;
//! let back = flow.inverse(&z)?;
//! assert!((back - &x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! assert_eq!(logp.dims(), &[1, 1]);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod data;
pub mod train;

pub use card::write_flow_card;
pub use train::{train_distill, train_flow, FlowReport, FlowTrainOptions};

use std::path::Path;

use anyhow::{ensure, Context, Result};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::layers::{export_tensor, Params};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};

/// Which side of an affine autoregressive layer its MADE reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowKind {
    /// Masked autoregressive flow: the MADE reads the data side (one-pass density).
    Maf,
    /// Inverse autoregressive flow: the MADE reads the latent side (one-pass sampling).
    Iaf,
}

impl FlowKind {
    /// `"maf"` or `"iaf"`.
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Maf => "maf",
            FlowKind::Iaf => "iaf",
        }
    }
}

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FlowConfig {
    /// MAF or IAF.
    pub kind: FlowKind,
    /// Data dimension `D`.
    pub dim: usize,
    /// Affine autoregressive layers (odd ones reverse the order).
    pub layers: usize,
    /// Width of each MADE hidden layer.
    pub hidden: usize,
    /// MADE hidden layers (ReLU).
    pub hidden_layers: usize,
    /// The log-scale is soft-clamped to `±alpha_bound` by `bound·tanh(raw/bound)`.
    pub alpha_bound: f32,
}

impl FlowConfig {
    /// The zoo flow: 5 layers of MADE(64, 64) with ReLU, log-scales within ±3.
    pub fn new(kind: FlowKind, dim: usize) -> Self {
        Self { kind, dim, layers: 5, hidden: 64, hidden_layers: 2, alpha_bound: 3.0 }
    }
}

/// Degrees `1..=D` of the `D` coordinates in a layer's order (reversed in odd layers).
pub fn input_degrees(dim: usize, reversed: bool) -> Vec<usize> {
    (0..dim).map(|i| if reversed { dim - i } else { i + 1 }).collect()
}

/// Degrees of MADE hidden units: `1..=D-1`, assigned cyclically.
pub fn hidden_degrees(dim: usize, width: usize) -> Vec<usize> {
    (0..width).map(|h| h % (dim - 1).max(1) + 1).collect()
}

/// A dense layer `y = x (W∘M) + b` with `W`, `M` stored `[in, out]`.
#[derive(Clone, Debug)]
pub struct MaskedLinear {
    name: String,
    weight: Var,
    bias: Var,
    mask: Tensor,
}

impl MaskedLinear {
    /// `mask[i][o]` is 1 where input `i` may reach output `o`; weights normal(0, std).
    fn new(p: &mut Params, name: &str, mask: &[Vec<f32>], std: f64) -> Result<Self> {
        let (d_in, d_out) = (mask.len(), mask[0].len());
        let weight = p.normal(&format!("{name}.weight"), &[d_in, d_out], std, true)?;
        let bias = p.constant(&format!("{name}.bias"), &[d_out], 0.0)?;
        let flat: Vec<f32> = mask.iter().flatten().copied().collect();
        let mask = Tensor::from_vec(flat, (d_in, d_out), p.device())?;
        Ok(Self { name: name.to_string(), weight, bias, mask })
    }

    /// The weights with the mask multiplied in (what the ONNX file stores).
    pub fn masked_weight(&self) -> candle_core::Result<Tensor> {
        self.weight.as_tensor().mul(&self.mask)
    }

    /// The `[in, out]` 0/1 mask.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.masked_weight()?)?.broadcast_add(self.bias.as_tensor())
    }

    /// `MatMul(x, W∘M) → Add(b)`; the initializers are shared by every use of the layer.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let w = export_tensor(g, &format!("{}.weight", self.name), &self.masked_weight()?)?;
        let b = export_tensor(g, &format!("{}.bias", self.name), self.bias.as_tensor())?;
        let y = g.op("MatMul", &[input, &w], vec![]);
        Ok(g.op("Add", &[&y, &b], vec![]))
    }
}

/// One MADE: masked ReLU hidden layers, then a masked shift head and a masked log-scale head.
#[derive(Clone, Debug)]
pub struct Made {
    hidden: Vec<MaskedLinear>,
    mu: MaskedLinear,
    alpha: MaskedLinear,
    bound: f32,
    degrees: Vec<usize>,
}

impl Made {
    fn new(p: &mut Params, name: &str, cfg: &FlowConfig, reversed: bool) -> Result<Self> {
        let d = cfg.dim;
        let deg_in = input_degrees(d, reversed);
        let deg_h = hidden_degrees(d, cfg.hidden);
        let mut hidden = Vec::new();
        let mut prev = deg_in.clone();
        for l in 0..cfg.hidden_layers {
            let mask: Vec<Vec<f32>> =
                prev.iter().map(|&a| deg_h.iter().map(|&h| f32::from(u8::from(h >= a))).collect()).collect();
            let std = (2.0 / prev.len() as f64).sqrt();
            hidden.push(MaskedLinear::new(p, &format!("{name}.h{l}"), &mask, std)?);
            prev = deg_h.clone();
        }
        let out_mask: Vec<Vec<f32>> =
            prev.iter().map(|&h| deg_in.iter().map(|&o| f32::from(u8::from(o > h))).collect()).collect();
        let mu = MaskedLinear::new(p, &format!("{name}.mu"), &out_mask, 0.01)?;
        let alpha = MaskedLinear::new(p, &format!("{name}.alpha"), &out_mask, 0.01)?;
        Ok(Self { hidden, mu, alpha, bound: cfg.alpha_bound, degrees: deg_in })
    }

    /// Degree of each coordinate in this MADE's order (`1` is conditioned on nothing).
    pub fn degrees(&self) -> &[usize] {
        &self.degrees
    }

    /// Every masked layer, input side first.
    pub fn masked_layers(&self) -> Vec<&MaskedLinear> {
        self.hidden.iter().chain([&self.mu, &self.alpha]).collect()
    }

    /// `(μ, α)` of every coordinate from `x [n, D]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.forward(&h)?.relu()?;
        }
        let mu = self.mu.forward(&h)?;
        let b = f64::from(self.bound);
        let alpha = (self.alpha.forward(&h)?.affine(1.0 / b, 0.0)?.tanh()? * b)?;
        Ok((mu, alpha))
    }

    fn export(&self, g: &mut GraphBuilder, x: &str) -> Result<(String, String)> {
        let mut h = x.to_string();
        for l in &self.hidden {
            let y = l.export(g, &h)?;
            h = g.op("Relu", &[&y], vec![]);
        }
        let mu = self.mu.export(g, &h)?;
        let raw = self.alpha.export(g, &h)?;
        let inv = g.const_f32_scalar(1.0 / self.bound);
        let t = g.op("Mul", &[&raw, &inv], vec![]);
        let t = g.op("Tanh", &[&t], vec![]);
        let b = g.const_f32_scalar(self.bound);
        Ok((mu, g.op("Mul", &[&t, &b], vec![])))
    }
}

/// One affine autoregressive layer: `h = u·exp(α) + μ` between its data side `h` and its
/// latent side `u`, `(μ, α)` from the MADE of `h` (MAF) or of `u` (IAF).
#[derive(Clone, Debug)]
pub struct ArLayer {
    made: Made,
    kind: FlowKind,
    dim: usize,
}

/// `(h − μ)·exp(−α)`.
fn to_latent(h: &Tensor, mu: &Tensor, alpha: &Tensor) -> candle_core::Result<Tensor> {
    (h - mu)?.mul(&alpha.neg()?.exp()?)
}

/// `u·exp(α) + μ`.
fn to_data(u: &Tensor, mu: &Tensor, alpha: &Tensor) -> candle_core::Result<Tensor> {
    u.mul(&alpha.exp()?)? + mu
}

impl ArLayer {
    /// The layer's MADE.
    pub fn made(&self) -> &Made {
        &self.made
    }

    /// Data side → latent side and the layer's `α` (log-det of the forward map is `−Σα`).
    /// MAF: one MADE pass; IAF: `D` passes, each fixing the next coordinate in order.
    pub fn forward(&self, h: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        match self.kind {
            FlowKind::Maf => {
                let (mu, alpha) = self.made.forward(h)?;
                Ok((to_latent(h, &mu, &alpha)?, alpha))
            }
            FlowKind::Iaf => {
                let mut u = h.clone();
                let mut alpha = None;
                for _ in 0..self.dim {
                    let (mu, a) = self.made.forward(&u)?;
                    u = to_latent(h, &mu, &a)?;
                    alpha = Some(a);
                }
                Ok((u, alpha.expect("dim >= 1")))
            }
        }
    }

    /// Latent side → data side and the layer's `α`. IAF: one pass; MAF: `D` passes.
    pub fn inverse(&self, u: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        match self.kind {
            FlowKind::Iaf => {
                let (mu, alpha) = self.made.forward(u)?;
                Ok((to_data(u, &mu, &alpha)?, alpha))
            }
            FlowKind::Maf => {
                let mut h = u.clone();
                let mut alpha = None;
                for _ in 0..self.dim {
                    let (mu, a) = self.made.forward(&h)?;
                    h = to_data(u, &mu, &a)?;
                    alpha = Some(a);
                }
                Ok((h, alpha.expect("dim >= 1")))
            }
        }
    }

    /// ONNX of [`ArLayer::forward`]; returns `(u, α)`.
    fn export_forward(&self, g: &mut GraphBuilder, h: &str, out: Option<&str>) -> Result<(String, String)> {
        let passes = if self.kind == FlowKind::Maf { 1 } else { self.dim };
        let mut u = h.to_string();
        let mut alpha = String::new();
        for p in 0..passes {
            let (mu, a) = self.made.export(g, &u)?;
            let d = g.op("Sub", &[h, &mu], vec![]);
            let na = g.op("Neg", &[&a], vec![]);
            let s = g.op("Exp", &[&na], vec![]);
            u = match out {
                Some(name) if p + 1 == passes => g.op_named("Mul", &[&d, &s], vec![], name),
                _ => g.op("Mul", &[&d, &s], vec![]),
            };
            alpha = a;
        }
        Ok((u, alpha))
    }

    /// ONNX of [`ArLayer::inverse`]; returns `h`.
    fn export_inverse(&self, g: &mut GraphBuilder, u: &str, out: Option<&str>) -> Result<String> {
        let passes = if self.kind == FlowKind::Iaf { 1 } else { self.dim };
        let mut h = u.to_string();
        for p in 0..passes {
            let (mu, a) = self.made.export(g, &h)?;
            let s = g.op("Exp", &[&a], vec![]);
            let m = g.op("Mul", &[u, &s], vec![]);
            h = match out {
                Some(name) if p + 1 == passes => g.op_named("Add", &[&m, &mu], vec![], name),
                _ => g.op("Add", &[&m, &mu], vec![]),
            };
        }
        Ok(h)
    }
}

/// `−D/2 · ln 2π`, the constant of the standard-normal log-density in `D` dims.
pub fn log_normal_const(dim: usize) -> f32 {
    -0.5 * dim as f32 * (2.0 * std::f32::consts::PI).ln()
}

/// A stack of affine autoregressive layers; layer 0 touches the data.
#[derive(Debug)]
pub struct Flow {
    cfg: FlowConfig,
    params: Params,
    layers: Vec<ArLayer>,
}

impl Flow {
    /// A freshly initialised flow (near the identity: the MADE heads start small).
    pub fn new(cfg: FlowConfig, seed: u64) -> Result<Self> {
        ensure!(cfg.dim >= 2, "an autoregressive flow needs at least 2 dimensions");
        ensure!(cfg.hidden >= cfg.dim - 1, "MADE hidden width must cover every degree 1..D-1");
        let mut params = Params::new(seed);
        let mut layers = Vec::new();
        for k in 0..cfg.layers {
            let made = Made::new(&mut params, &format!("{}.l{k}", cfg.kind.name()), &cfg, k % 2 == 1)?;
            layers.push(ArLayer { made, kind: cfg.kind, dim: cfg.dim });
        }
        Ok(Self { cfg, params, layers })
    }

    /// The architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The layers, data side first.
    pub fn layers(&self) -> &[ArLayer] {
        &self.layers
    }

    /// Data `x [n, D]` → latent `z [n, D]` and `log p(x) [n, 1]` (nats).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let mut alpha_sum: Option<Tensor> = None;
        for l in &self.layers {
            let (u, a) = l.forward(&h)?;
            h = u;
            alpha_sum = Some(match alpha_sum {
                None => a,
                Some(s) => (s + a)?,
            });
        }
        let logp = self.log_prob_of(&h, alpha_sum.as_ref())?;
        Ok((h, logp))
    }

    /// `log N(z) − Σα` summed over the coordinates, `[n, 1]`.
    fn log_prob_of(&self, z: &Tensor, alpha_sum: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let mut s = (z.sqr()? * -0.5)?;
        if let Some(a) = alpha_sum {
            s = (s - a)?;
        }
        s.sum_keepdim(1)? + f64::from(log_normal_const(self.cfg.dim))
    }

    /// Latent `z [n, D]` → data `x [n, D]` (a sample when `z ~ N(0, I)`).
    pub fn inverse(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.sample_with_log_prob(z)?.0)
    }

    /// `x = inverse(z)` and its log-density `log q(x) = log N(z) − Σα`, from the same passes.
    pub fn sample_with_log_prob(&self, z: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = z.clone();
        let mut alpha_sum: Option<Tensor> = None;
        for l in self.layers.iter().rev() {
            let (x, a) = l.inverse(&h)?;
            h = x;
            alpha_sum = Some(match alpha_sum {
                None => a,
                Some(s) => (s + a)?,
            });
        }
        let logq = self.log_prob_of(z, alpha_sum.as_ref())?;
        Ok((h, logq))
    }

    fn graph(&self, direction: &str) -> GraphBuilder {
        let mut g = GraphBuilder::new(&format!("{}_{direction}", self.cfg.kind.name()));
        g.metadata("mote.family", self.cfg.kind.name());
        g.metadata("mote.direction", direction);
        g.metadata("mote.dim", &self.cfg.dim.to_string());
        g
    }

    fn dims(&self, cols: usize) -> [Dim; 2] {
        [Dim::Param("n".into()), Dim::Fixed(cols as i64)]
    }

    /// ONNX of [`Flow::forward`]: `x [n, D]` → `z [n, D]`, `log_prob [n, 1]`.
    pub fn export_forward(&self) -> Result<Vec<u8>> {
        let d = self.cfg.dim;
        let mut g = self.graph("forward");
        g.input("x", DataType::Float, &self.dims(d));
        let mut h = "x".to_string();
        let mut alpha_sum: Option<String> = None;
        let last = self.layers.len() - 1;
        for (k, l) in self.layers.iter().enumerate() {
            g.push_scope(&format!("l{k}"));
            let (u, a) = l.export_forward(&mut g, &h, (k == last).then_some("z"))?;
            alpha_sum = Some(match alpha_sum {
                None => a,
                Some(s) => g.op("Add", &[&s, &a], vec![]),
            });
            g.pop_scope();
            h = u;
        }
        let sq = g.op("Mul", &[&h, &h], vec![]);
        let half = g.const_f32_scalar(-0.5);
        let s = g.op("Mul", &[&sq, &half], vec![]);
        let s = g.op("Sub", &[&s, &alpha_sum.context("a flow needs layers")?], vec![]);
        let axes = g.const_i64_vec(&[-1]);
        let s = g.op("ReduceSum", &[&s, &axes], vec![attr_int("keepdims", 1)]);
        let c = g.const_f32_scalar(log_normal_const(d));
        let lp = g.op_named("Add", &[&s, &c], vec![], "log_prob");
        g.output(&h, DataType::Float, &self.dims(d));
        g.output(&lp, DataType::Float, &self.dims(1));
        Ok(g.finish())
    }

    /// ONNX of [`Flow::inverse`]: `z [n, D]` → `x [n, D]`.
    pub fn export_inverse(&self) -> Result<Vec<u8>> {
        let d = self.cfg.dim;
        let mut g = self.graph("inverse");
        g.input("z", DataType::Float, &self.dims(d));
        let mut u = "z".to_string();
        for (k, l) in self.layers.iter().enumerate().rev() {
            g.push_scope(&format!("l{k}"));
            u = l.export_inverse(&mut g, &u, (k == 0).then_some("x"))?;
            g.pop_scope();
        }
        g.output(&u, DataType::Float, &self.dims(d));
        Ok(g.finish())
    }

    /// Loads the weights of a flow exported with this `cfg` from its ONNX file (either
    /// direction): the baked `W∘M` become the weights, which leaves the masked forward unchanged.
    pub fn load_onnx(cfg: FlowConfig, path: &Path) -> Result<Self> {
        let flow = Self::new(cfg, 0)?;
        flow.params.load_onnx_initializers(path, &|_| false)?;
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use candle_core::Device;

    fn flow(kind: FlowKind) -> Flow {
        let cfg = FlowConfig { layers: 3, hidden: 12, ..FlowConfig::new(kind, 4) };
        let mut f = Flow::new(cfg, 3).unwrap();
        f.params.randomize(0.3).unwrap();
        f
    }

    fn batch() -> Tensor {
        let v: Vec<f32> = (0..20).map(|i| ((i * 37 % 11) as f32 - 5.0) / 4.0).collect();
        Tensor::from_vec(v, (5, 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn both_kinds_invert_and_agree_on_log_density() -> Result<()> {
        for kind in [FlowKind::Maf, FlowKind::Iaf] {
            let f = flow(kind);
            let x = batch();
            let (z, lp) = f.forward(&x)?;
            let (back, lq) = f.sample_with_log_prob(&z)?;
            let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{kind:?}: {err}");
            let dl = (lp - lq)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(dl < 1e-3, "{kind:?}: {dl}");
        }
        Ok(())
    }

    #[test]
    fn latent_coordinate_depends_only_on_earlier_data_in_a_maf_layer() -> Result<()> {
        let f = flow(FlowKind::Maf);
        let l = &f.layers[1]; // reversed order
        let x = batch();
        let (u0, _) = l.forward(&x)?;
        let mut v = tensor_data(&x)?;
        v[2] += 0.5; // coordinate 2 of row 0: degree 2 in the reversed order of 4
        let (u1, _) = l.forward(&Tensor::from_vec(v, (5, 4), &Device::Cpu)?)?;
        let d = tensor_data(&(u1 - u0)?.abs()?)?;
        let deg = l.made.degrees();
        for (i, &di) in deg.iter().enumerate() {
            let changed = d[i] > 0.0;
            assert_eq!(changed, di >= deg[2], "coordinate {i} (degree {di})");
        }
        Ok(())
    }
}
