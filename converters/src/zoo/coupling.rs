//! Coupling normalizing flows on 2-D data: NICE (additive coupling, then a diagonal scaling
//! layer) and RealNVP (affine coupling with a `tanh`-bounded log-scale), one module for both
//! ([`CouplingKind`]).
//!
//! A flow maps data `x` to a latent `z` through invertible layers. Layer `k` keeps coordinate
//! `k mod 2` (the conditioner `a`) and transforms the other one (`b`) with a function of `a`
//! computed by a small MLP (`1 → hidden → hidden → out`, ReLU):
//! - NICE: `b' = b + t(a)` (unit Jacobian); after the last coupling `z = h ⊙ scale`, so
//!   `log|det| = Σ log scale`;
//! - RealNVP: `s = σ · tanh(raw(a))`, `b' = b ⊙ exp(s) + t(a)`, `log|det| = Σ s` (σ a learned
//!   per-layer bound).
//!
//! `log p(x) = log N(z; 0, I) + log|det ∂z/∂x|`. Both directions are exported as ONNX graphs
//! reading the same initializers ([`CouplingFlow::export_forward`]: `x [n, 2] → z [n, 2],
//! log_prob [n, 1]`; [`CouplingFlow::export_inverse`]: `z [n, 2] → x [n, 2]`), so converting
//! them as two entries of one `.mote` stores the weights once.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::coupling::{CouplingFlow, CouplingKind, FlowConfig};
//! let flow = CouplingFlow::new(FlowConfig::new(CouplingKind::RealNvp), 0)?;
//! let x = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &Device::Cpu)?;
//! let (z, log_prob) = flow.forward(&x)?;
//! assert_eq!(log_prob.dims(), &[2, 1]);
//! let back = flow.inverse(&z)?;
//! assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod train;

pub use card::write_flow_card;
pub use train::{train_flow, FlowReport, FlowTrainOptions};

use anyhow::Result;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::layers::{export_tensor, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};

/// `ln(2π)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Which coupling flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CouplingKind {
    /// Additive coupling plus a final diagonal scaling layer (Dinh et al., 2014).
    Nice,
    /// Affine coupling, `log|det| = Σ s` (Dinh et al., 2016).
    RealNvp,
}

impl CouplingKind {
    /// Folder and command-line name: `nice` or `realnvp`.
    pub fn name(self) -> &'static str {
        match self {
            CouplingKind::Nice => "nice",
            CouplingKind::RealNvp => "realnvp",
        }
    }

    /// Display name: `NICE` or `RealNVP`.
    pub fn title(self) -> &'static str {
        match self {
            CouplingKind::Nice => "NICE",
            CouplingKind::RealNvp => "RealNVP",
        }
    }

    /// Outputs of a coupling net: `t` (NICE) or `raw s, t` (RealNVP).
    fn net_outputs(self) -> usize {
        match self {
            CouplingKind::Nice => 1,
            CouplingKind::RealNvp => 2,
        }
    }
}

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FlowConfig {
    /// NICE or RealNVP.
    pub kind: CouplingKind,
    /// Coupling layers (the conditioning coordinate alternates).
    pub layers: usize,
    /// Width of the two hidden layers of each coupling net.
    pub hidden: usize,
    /// Batch bound `n` of the exported graphs (the converter's `--dim n=…`).
    pub max_batch: usize,
}

impl FlowConfig {
    /// The zoo model: 8 additive (NICE) or 6 affine (RealNVP) couplings, nets 1 → 64 → 64 → out,
    /// exported for batches of up to 64 points.
    pub fn new(kind: CouplingKind) -> Self {
        let layers = match kind {
            CouplingKind::Nice => 8,
            CouplingKind::RealNvp => 6,
        };
        Self { kind, layers, hidden: 64, max_batch: 64 }
    }
}

/// One coupling layer: conditioner coordinate `cond`, the other one transformed.
#[derive(Debug)]
struct Coupling {
    name: String,
    cond: usize,
    fc1: Linear,
    fc2: Linear,
    head: Linear,
    /// RealNVP's per-layer log-scale bound σ (`s = σ tanh(raw)`).
    s_bound: Option<Var>,
}

/// The candle shift `t` (and RealNVP log-scale `s`) of a coupling for conditioner `a [n, 1]`.
struct Shift {
    t: Tensor,
    s: Option<Tensor>,
}

impl Coupling {
    fn net(&self, a: &Tensor) -> candle_core::Result<Shift> {
        let h = self.fc1.forward(a)?.relu()?;
        let h = self.fc2.forward(&h)?.relu()?;
        let out = self.head.forward(&h)?;
        Ok(match &self.s_bound {
            None => Shift { t: out, s: None },
            Some(bound) => {
                let s = out.narrow(1, 0, 1)?.tanh()?.broadcast_mul(bound.as_tensor())?;
                Shift { t: out.narrow(1, 1, 1)?, s: Some(s) }
            }
        })
    }

    /// `(a, b)` halves of `h [n, 2]`.
    fn split(&self, h: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((h.narrow(1, self.cond, 1)?, h.narrow(1, 1 - self.cond, 1)?))
    }

    fn join(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        if self.cond == 0 {
            Tensor::cat(&[a, b], 1)
        } else {
            Tensor::cat(&[b, a], 1)
        }
    }

    /// ONNX: the net's outputs `(t, s)` for conditioner value `a`.
    fn export_net(&self, g: &mut GraphBuilder, a: &str) -> Result<(String, Option<String>)> {
        let h = self.fc1.export(g, a)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.fc2.export(g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let out = self.head.export(g, &h)?;
        let Some(bound) = &self.s_bound else { return Ok((out, None)) };
        let bound = export_tensor(g, &format!("{}.s_bound", self.name), bound)?;
        g.push_scope(&self.name);
        let raw = slice_col(g, &out, 0);
        let t = slice_col(g, &out, 1);
        let s = g.op("Tanh", &[&raw], vec![]);
        let s = g.op("Mul", &[&s, &bound], vec![]);
        g.pop_scope();
        Ok((t, Some(s)))
    }

    /// ONNX: `(a, b)` halves of `h`.
    fn export_split(&self, g: &mut GraphBuilder, h: &str) -> (String, String) {
        g.push_scope(&self.name);
        let out = (slice_col(g, h, self.cond), slice_col(g, h, 1 - self.cond));
        g.pop_scope();
        out
    }

    fn export_join(&self, g: &mut GraphBuilder, a: &str, b: &str, output: Option<&str>) -> String {
        let parts = if self.cond == 0 { [a, b] } else { [b, a] };
        let attrs = vec![attr_int("axis", 1)];
        match output {
            Some(name) => g.op_named("Concat", &parts, attrs, name),
            None => g.op("Concat", &parts, attrs),
        }
    }
}

/// ONNX `Slice` of column `c` of a `[n, 2]` value, keeping the axis (`[n, 1]`).
fn slice_col(g: &mut GraphBuilder, x: &str, c: usize) -> String {
    let starts = g.const_i64_vec(&[c as i64]);
    let ends = g.const_i64_vec(&[c as i64 + 1]);
    let axes = g.const_i64_vec(&[1]);
    g.op("Slice", &[x, &starts, &ends, &axes], vec![])
}

/// A NICE or RealNVP flow on 2-D points.
#[derive(Debug)]
pub struct CouplingFlow {
    cfg: FlowConfig,
    params: Params,
    layers: Vec<Coupling>,
    /// NICE's diagonal scaling, as a log-scale `[1, 2]`.
    log_scale: Option<Var>,
}

impl CouplingFlow {
    /// A flow with freshly initialised weights drawn from `seed`: each coupling's output head
    /// starts near zero, so the untrained flow is close to the identity.
    pub fn new(cfg: FlowConfig, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let hdim = cfg.hidden;
        let mut layers = Vec::new();
        for k in 0..cfg.layers {
            let name = format!("c{k}");
            layers.push(Coupling {
                cond: k % 2,
                fc1: Linear::new(&mut p, &format!("{name}.fc1"), 1, hdim, 1.0)?,
                fc2: Linear::new(&mut p, &format!("{name}.fc2"), hdim, hdim, (2.0 / hdim as f64).sqrt())?,
                head: Linear::new(&mut p, &format!("{name}.head"), hdim, cfg.kind.net_outputs(), 1e-3)?,
                s_bound: match cfg.kind {
                    CouplingKind::Nice => None,
                    CouplingKind::RealNvp => Some(p.constant(&format!("{name}.s_bound"), &[1], 1.0)?),
                },
                name,
            });
        }
        let log_scale = match cfg.kind {
            CouplingKind::Nice => Some(p.constant("scale.log", &[1, 2], 0.0)?),
            CouplingKind::RealNvp => None,
        };
        Ok(Self { cfg, params: p, layers, log_scale })
    }

    /// The architecture.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Data → latent: `(z [n, 2], log p(x) [n, 1])` under a standard normal prior.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let mut log_det: Option<Tensor> = None;
        for l in &self.layers {
            let (a, b) = l.split(&h)?;
            let sh = l.net(&a)?;
            let b = match &sh.s {
                None => (b + &sh.t)?,
                Some(s) => {
                    log_det = Some(match log_det {
                        None => s.clone(),
                        Some(d) => (d + s)?,
                    });
                    (b.mul(&s.exp()?)? + &sh.t)?
                }
            };
            h = l.join(&a, &b)?;
        }
        // NICE: z = h ⊙ exp(log_scale); its log|det| Σ log_scale is the same for every point
        // (a tensor here, so that it is trained).
        let mut c = None;
        if let Some(ls) = &self.log_scale {
            h = h.broadcast_mul(&ls.as_tensor().exp()?)?;
            c = Some((ls.as_tensor().sum_keepdim(1)? - LN_2PI)?);
        }
        let lp = (h.sqr()?.sum_keepdim(1)? * -0.5)?;
        let mut lp = match c {
            Some(c) => lp.broadcast_add(&c)?,
            None => (lp - LN_2PI)?,
        };
        if let Some(d) = log_det {
            lp = (lp + d)?;
        }
        Ok((h, lp))
    }

    /// NICE's diagonal scale `exp(log_scale)`, the tensor both exports share.
    fn scale(&self) -> candle_core::Result<Option<Tensor>> {
        self.log_scale.as_ref().map(|ls| ls.as_tensor().exp()).transpose()
    }

    /// Latent → data: the exact inverse of [`CouplingFlow::forward`]'s `z`.
    pub fn inverse(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = z.clone();
        if let Some(scale) = self.scale()? {
            h = h.broadcast_div(&scale)?;
        }
        for l in self.layers.iter().rev() {
            let (a, b) = l.split(&h)?;
            let sh = l.net(&a)?;
            let b = (b - &sh.t)?;
            let b = match &sh.s {
                None => b,
                Some(s) => b.mul(&s.neg()?.exp()?)?,
            };
            h = l.join(&a, &b)?;
        }
        Ok(h)
    }

    fn graph(&self, name: &str, input: &str) -> GraphBuilder {
        let mut g = GraphBuilder::new(&format!("{}_{name}", self.cfg.kind.name()));
        g.input(input, DataType::Float, &[Dim::Param("n".into()), Dim::Fixed(2)]);
        g.metadata("mote.family", self.cfg.kind.name());
        g.metadata("mote.flow_direction", name);
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g
    }

    /// ONNX of the forward direction: input `x [n, 2]`, outputs `z [n, 2]` and
    /// `log_prob [n, 1]` (`-½ ReduceSum(z²) - ln 2π + log|det|`).
    pub fn export_forward(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("forward", "x");
        let mut h = "x".to_string();
        let mut log_det: Option<String> = None;
        let last = self.layers.len().saturating_sub(1);
        for (k, l) in self.layers.iter().enumerate() {
            let (a, b) = l.export_split(&mut g, &h);
            let (t, s) = l.export_net(&mut g, &a)?;
            g.push_scope(&l.name);
            let b = match s {
                None => g.op("Add", &[&b, &t], vec![]),
                Some(s) => {
                    let e = g.op("Exp", &[&s], vec![]);
                    let m = g.op("Mul", &[&b, &e], vec![]);
                    log_det = Some(match log_det {
                        None => s,
                        Some(d) => g.op("Add", &[&d, &s], vec![]),
                    });
                    g.op("Add", &[&m, &t], vec![])
                }
            };
            let named = k == last && self.log_scale.is_none();
            h = l.export_join(&mut g, &a, &b, named.then_some("z"));
            g.pop_scope();
        }
        let mut const_log_det = 0f64;
        if let Some(scale) = self.scale()? {
            let w = export_tensor(&mut g, "scale", &scale)?;
            h = g.op_named("Mul", &[&h, &w], vec![], "z");
            const_log_det = self
                .log_scale
                .as_ref()
                .map(|l| l.as_tensor().sum_all()?.to_scalar::<f32>())
                .transpose()?
                .unwrap_or(0.0) as f64;
        }
        g.push_scope("prior");
        let sq = g.op("Mul", &[&h, &h], vec![]);
        let axes = g.const_i64_vec(&[-1]);
        let ss = g.op("ReduceSum", &[&sq, &axes], vec![attr_int("keepdims", 1)]);
        let half = g.const_f32_scalar(-0.5);
        let lp = g.op("Mul", &[&ss, &half], vec![]);
        let c = g.const_f32_scalar((const_log_det - LN_2PI) as f32);
        let lp = match log_det {
            None => g.op_named("Add", &[&lp, &c], vec![], "log_prob"),
            Some(d) => {
                let lp = g.op("Add", &[&lp, &c], vec![]);
                g.op_named("Add", &[&lp, &d], vec![], "log_prob")
            }
        };
        g.pop_scope();
        let n = || Dim::Param("n".into());
        g.output(&h, DataType::Float, &[n(), Dim::Fixed(2)]);
        g.output(&lp, DataType::Float, &[n(), Dim::Fixed(1)]);
        Ok(g.finish())
    }

    /// ONNX of the inverse direction: input `z [n, 2]`, output `x [n, 2]`.
    pub fn export_inverse(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("inverse", "z");
        let mut h = "z".to_string();
        if let Some(scale) = self.scale()? {
            let w = export_tensor(&mut g, "scale", &scale)?;
            h = g.op("Div", &[&h, &w], vec![]);
        }
        for (k, l) in self.layers.iter().enumerate().rev() {
            let (a, b) = l.export_split(&mut g, &h);
            let (t, s) = l.export_net(&mut g, &a)?;
            g.push_scope(&l.name);
            let b = g.op("Sub", &[&b, &t], vec![]);
            let b = match s {
                None => b,
                Some(s) => {
                    let ns = g.op("Neg", &[&s], vec![]);
                    let e = g.op("Exp", &[&ns], vec![]);
                    g.op("Mul", &[&b, &e], vec![])
                }
            };
            h = l.export_join(&mut g, &a, &b, (k == 0).then_some("x"));
            g.pop_scope();
        }
        g.output(&h, DataType::Float, &[Dim::Param("n".into()), Dim::Fixed(2)]);
        Ok(g.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::rng::SplitMix64;
    use candle_core::Device;

    fn points(n: usize, seed: u64) -> Tensor {
        let mut r = SplitMix64::new(seed);
        Tensor::from_vec(r.normal_vec(2 * n, 1.5), (n, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn inverse_undoes_forward_and_log_det_matches_finite_differences() -> Result<()> {
        for kind in [CouplingKind::Nice, CouplingKind::RealNvp] {
            let mut flow = CouplingFlow::new(FlowConfig { layers: 4, hidden: 16, ..FlowConfig::new(kind) }, 3)?;
            flow.params.randomize(0.4)?;
            let x = points(8, 1);
            let (z, lp) = flow.forward(&x)?;
            let back = flow.inverse(&z)?;
            assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4, "{kind:?}");
            // log|det J| by central differences in f64 of the f32 map.
            let xs: Vec<Vec<f32>> = x.to_vec2()?;
            let lps: Vec<Vec<f32>> = lp.to_vec2()?;
            let zs: Vec<Vec<f32>> = z.to_vec2()?;
            let eps = 1e-2f32;
            for (i, p) in xs.iter().enumerate() {
                let mut jac = [[0f64; 2]; 2];
                for d in 0..2 {
                    let mut hi = p.clone();
                    let mut lo = p.clone();
                    hi[d] += eps;
                    lo[d] -= eps;
                    let pair = Tensor::from_vec([hi, lo].concat(), (2, 2), &Device::Cpu)?;
                    let zz: Vec<Vec<f32>> = flow.forward(&pair)?.0.to_vec2()?;
                    for o in 0..2 {
                        jac[o][d] = (zz[0][o] as f64 - zz[1][o] as f64) / (2.0 * eps as f64);
                    }
                }
                let log_det = (jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]).abs().ln();
                let prior = -0.5 * zs[i].iter().map(|&v| (v as f64).powi(2)).sum::<f64>() - LN_2PI;
                assert!(
                    (prior + log_det - lps[i][0] as f64).abs() < 2e-2,
                    "{kind:?}: {} vs {}",
                    prior + log_det,
                    lps[i][0]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn onnx_exports_match_candle() -> Result<()> {
        use crate::zoo::tract_run::run_tract_f32;
        for kind in [CouplingKind::Nice, CouplingKind::RealNvp] {
            let mut flow = CouplingFlow::new(FlowConfig { layers: 3, hidden: 8, ..FlowConfig::new(kind) }, 5)?;
            flow.params.randomize(0.5)?;
            let x = points(5, 2);
            let (z, _) = flow.forward(&x)?;
            let z_onnx = run_tract_f32(&flow.export_forward()?, &x)?;
            let want: Vec<f32> = z.flatten_all()?.to_vec1()?;
            assert!(want.iter().zip(&z_onnx).all(|(a, b)| (a - b).abs() < 1e-5), "{kind:?} forward");
            let x_onnx = run_tract_f32(&flow.export_inverse()?, &z)?;
            let want: Vec<f32> = flow.inverse(&z)?.flatten_all()?.to_vec1()?;
            assert!(want.iter().zip(&x_onnx).all(|(a, b)| (a - b).abs() < 1e-5), "{kind:?} inverse");
        }
        Ok(())
    }
}
