//! A planar normalizing flow (Rezende & Mohamed, 2015) on 2-D data, run in both directions.
//!
//! The flow is defined in the *generative* direction: `x = f_K ∘ … ∘ f_1(z)`, `z ~ N(0, I)`,
//! with planar layers `f(v) = v + û·tanh(wᵀv + b)`. Each layer is kept invertible by
//! Rezende & Mohamed's reparameterisation `û = u + (m(wᵀu) − wᵀu)·w/‖w‖²`,
//! `m(a) = −1 + softplus(a)`, so that `c = wᵀû = m(wᵀu) > −1` and `f` is strictly monotone
//! along `w`. Its Jacobian determinant is `1 + ψᵀû = 1 + c·(1 − tanh²(wᵀv + b)) > 0`.
//!
//! - **`inverse`** (latent → data, sampling) is the cheap direction: K planar layers.
//! - **`forward`** (data → latent, exact log-likelihood) inverts every layer. Given
//!   `y = f(v)`, the scalar `t = wᵀv + b` solves `t + c·tanh(t) = r` with `r = wᵀy + b`;
//!   it is found by a fixed number of Newton steps ([`PlanarConfig::newton_steps`]) from
//!   `t₀ = r / (1 + c)`, then `v = y − û·tanh(t)`. For every `c > −1` the map
//!   `t ↦ t + c·tanh(t)` is increasing with a single inflection point at 0, and `t₀` lies
//!   between 0 and the root on the side where Newton converges monotonically (for `c > 0`,
//!   `h' ≤ 1 + c` puts `t₀` on the root's concave side below it; for `c < 0`, `h' ≥ 1 + c` puts
//!   it beyond the root on the convex side), so the unrolled iteration needs no safeguard.
//!   `log p(y) = log N(z; 0, I) − Σ_k log(1 + c_k·(1 − tanh²(t_k)))`.
//!
//! Both directions are exported as ONNX graphs reading the same initializers
//! ([`PlanarFlow::export_forward`]: `x [n, 2] → z [n, 2], log_prob [n, 1]`;
//! [`PlanarFlow::export_inverse`]: `z [n, 2] → x [n, 2]`), so converting them as two entries of
//! one `.mote` stores the weights once.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::planar::{PlanarConfig, PlanarFlow};
//! let flow = PlanarFlow::new(PlanarConfig::default(), 0)?;
//! let x = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25]], &Device::Cpu)?;
//! let (z, log_prob) = flow.forward(&x)?;
//! assert_eq!(log_prob.dims(), &[2, 1]);
//! let back = flow.inverse(&z)?;
//! assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod train;

pub use card::write_planar_card;
pub use train::{train_planar, PlanarReport, PlanarTrainOptions};

use anyhow::Result;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::coupling::LN_2PI;
use super::layers::{export_tensor, Params};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PlanarConfig {
    /// Planar layers K.
    pub layers: usize,
    /// Newton steps per layer inverse (the same in training and in the exported graph).
    pub newton_steps: usize,
    /// Batch bound `n` of the exported graphs (the converter's `--dim n=…`).
    pub max_batch: usize,
}

impl Default for PlanarConfig {
    /// The zoo model: 32 layers, 8 Newton steps per inverse, batches of up to 64 points.
    fn default() -> Self {
        Self { layers: 32, newton_steps: 8, max_batch: 64 }
    }
}

/// One planar layer's raw parameters.
#[derive(Debug)]
struct Planar {
    name: String,
    /// `[1, 2]`
    u: Var,
    /// `[2, 1]` (a column, so that `v·w` is a MatMul).
    w: Var,
    /// `[1, 1]`
    b: Var,
}

/// The constrained quantities of a layer, as candle tensors (differentiable in the raw
/// parameters).
struct Derived {
    /// `û [1, 2]`.
    u_hat: Tensor,
    /// `c = wᵀû = m(wᵀu) [1, 1]`.
    c: Tensor,
    /// `1 + c = softplus(wᵀu) [1, 1]` (computed directly, not as `1 + c`).
    one_plus_c: Tensor,
}

/// `softplus(x) = max(x, 0) + log(1 + e^{−|x|})`, stable for any `x`.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

impl Planar {
    fn derived(&self) -> candle_core::Result<Derived> {
        let (u, w) = (self.u.as_tensor(), self.w.as_tensor());
        let wu = u.matmul(w)?; // [1, 1]
        let one_plus_c = softplus(&wu)?;
        let c = (&one_plus_c - 1.0)?;
        let wn2 = w.sqr()?.sum_all()?.reshape((1, 1))?;
        let coef = (&c - &wu)?.div(&wn2)?; // [1, 1]
        let u_hat = u.broadcast_add(&w.t()?.broadcast_mul(&coef)?)?;
        Ok(Derived { u_hat, c, one_plus_c })
    }

    /// Generative step `v + û·tanh(v·w + b)`.
    fn apply(&self, v: &Tensor, d: &Derived) -> candle_core::Result<Tensor> {
        let t = v.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        v + t.tanh()?.broadcast_mul(&d.u_hat)?
    }

    /// One Newton step on `t + c·tanh(t) = r`.
    fn newton(t: &Tensor, r: &Tensor, c: &Tensor, one_plus_c: &Tensor) -> candle_core::Result<Tensor> {
        let th = t.tanh()?;
        let g = (t + th.broadcast_mul(c)?)?.sub(r)?;
        let gp = one_plus_c.broadcast_sub(&th.sqr()?.broadcast_mul(c)?)?;
        t - g.div(&gp)?
    }

    /// Inverse of [`Planar::apply`]: `(v [n, 2], log(1 + c·sech²(t)) [n, 1], t [n, 1])`.
    ///
    /// All Newton steps but the last run on detached values; the last one, taken from the
    /// (converged) detached iterate, carries the gradient. At a root the Newton map's derivative
    /// in its starting point vanishes, so this is the implicit-function gradient, and the values
    /// are those of the full unrolled iteration the ONNX graph computes.
    fn invert(&self, y: &Tensor, d: &Derived, steps: usize) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let r = y.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?;
        let (rd, cd, opcd) = (r.detach(), d.c.detach(), d.one_plus_c.detach());
        let mut t = rd.broadcast_div(&opcd)?;
        for _ in 1..steps {
            t = Self::newton(&t, &rd, &cd, &opcd)?;
        }
        let t = Self::newton(&t.detach(), &r, &d.c, &d.one_plus_c)?;
        let th = t.tanh()?;
        let v = (y - th.broadcast_mul(&d.u_hat)?)?;
        let log_det = d.one_plus_c.broadcast_sub(&th.sqr()?.broadcast_mul(&d.c)?)?.log()?;
        Ok((v, log_det, t))
    }

    /// ONNX constants of a layer: `(w, b, û, c, 1 + c, 1 / (1 + c))`.
    fn export_consts(&self, g: &mut GraphBuilder) -> Result<[String; 6]> {
        let d = self.derived()?;
        let w = export_tensor(g, &format!("{}.w", self.name), self.w.as_tensor())?;
        let b = export_tensor(g, &format!("{}.b", self.name), self.b.as_tensor())?;
        let u_hat = export_tensor(g, &format!("{}.u_hat", self.name), &d.u_hat)?;
        let c = export_tensor(g, &format!("{}.c", self.name), &d.c)?;
        let opc = export_tensor(g, &format!("{}.one_plus_c", self.name), &d.one_plus_c)?;
        let inv = export_tensor(g, &format!("{}.inv_one_plus_c", self.name), &d.one_plus_c.recip()?)?;
        Ok([w, b, u_hat, c, opc, inv])
    }
}

/// A planar flow on 2-D points.
#[derive(Debug)]
pub struct PlanarFlow {
    cfg: PlanarConfig,
    params: Params,
    layers: Vec<Planar>,
}

/// Per-point Newton diagnostics of one [`PlanarFlow::forward_with_residual`] pass.
pub struct NewtonCheck {
    /// max over layers and points of the relative residual `|t + c·tanh(t) − r| / (1 + |r|)`
    /// after the last step (f32 rounding of `r` alone is about 6e-8 of `|r|`).
    pub residual: f32,
}

impl PlanarFlow {
    /// A flow with freshly initialised weights drawn from `seed`: `w ~ N(0, 1)`, `u ~ N(0, 0.5)`,
    /// `b ~ N(0, 0.5)`.
    pub fn new(cfg: PlanarConfig, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let mut layers = Vec::new();
        for k in 0..cfg.layers {
            let name = format!("p{k}");
            layers.push(Planar {
                u: p.normal(&format!("{name}.u"), &[1, 2], 0.5, false)?,
                w: p.normal(&format!("{name}.w"), &[2, 1], 1.0, false)?,
                b: p.normal(&format!("{name}.b"), &[1, 1], 0.5, false)?,
                name,
            });
        }
        Ok(Self { cfg, params: p, layers })
    }

    /// The architecture.
    pub fn config(&self) -> &PlanarConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Data → latent: `(z [n, 2], log p(x) [n, 1])` under a standard normal prior, every layer
    /// inverted by [`PlanarConfig::newton_steps`] Newton steps.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (z, lp, _) = self.forward_with_residual(x)?;
        Ok((z, lp))
    }

    /// [`PlanarFlow::forward`] plus the Newton residual check.
    pub fn forward_with_residual(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, NewtonCheck)> {
        let mut h = x.clone();
        let mut log_det: Option<Tensor> = None;
        let mut residual = 0f32;
        for l in self.layers.iter().rev() {
            let d = l.derived()?;
            let r = h.matmul(l.w.as_tensor())?.broadcast_add(l.b.as_tensor())?;
            let (v, ld, t) = l.invert(&h, &d, self.cfg.newton_steps)?;
            let err = (&t + t.tanh()?.broadcast_mul(&d.c)?)?.sub(&r)?.abs()?;
            let res = err.div(&(r.abs()? + 1.0)?)?.max_all()?.to_scalar::<f32>()?;
            residual = residual.max(res);
            log_det = Some(match log_det {
                None => ld,
                Some(s) => (s + ld)?,
            });
            h = v;
        }
        let lp = ((h.sqr()?.sum_keepdim(1)? * -0.5)? - LN_2PI)?;
        let lp = match log_det {
            Some(s) => (lp - s)?,
            None => lp,
        };
        Ok((h, lp, NewtonCheck { residual }))
    }

    /// Latent → data: `x = f_K ∘ … ∘ f_1(z)`.
    pub fn inverse(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = z.clone();
        for l in &self.layers {
            h = l.apply(&h, &l.derived()?)?;
        }
        Ok(h)
    }

    fn graph(&self, name: &str, input: &str) -> GraphBuilder {
        let mut g = GraphBuilder::new(&format!("planar_{name}"));
        g.input(input, DataType::Float, &[Dim::Param("n".into()), Dim::Fixed(2)]);
        g.metadata("mote.family", "planar");
        g.metadata("mote.flow_direction", name);
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata("mote.newton_steps", &self.cfg.newton_steps.to_string());
        g
    }

    /// ONNX of the forward direction: input `x [n, 2]`, outputs `z [n, 2]` and
    /// `log_prob [n, 1]` (`-½ ReduceSum(z²) − ln 2π − Σ Log(1 + c·(1 − tanh²(t)))`), every
    /// layer inverted by unrolled Newton steps (MatMul, Tanh, Mul, Add, Sub, Div).
    pub fn export_forward(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("forward", "x");
        let mut h = "x".to_string();
        let mut log_det: Option<String> = None;
        for (k, l) in self.layers.iter().enumerate().rev() {
            let [w, b, u_hat, c, opc, inv] = l.export_consts(&mut g)?;
            g.push_scope(&l.name);
            let r = g.op("MatMul", &[&h, &w], vec![]);
            let r = g.op("Add", &[&r, &b], vec![]);
            let mut t = g.op("Mul", &[&r, &inv], vec![]);
            let gp_of = |g: &mut GraphBuilder, th: &str| {
                let th2 = g.op("Mul", &[th, th], vec![]);
                let cth2 = g.op("Mul", &[&th2, &c], vec![]);
                g.op("Sub", &[&opc, &cth2], vec![])
            };
            for _ in 0..self.cfg.newton_steps {
                let th = g.op("Tanh", &[&t], vec![]);
                let cth = g.op("Mul", &[&th, &c], vec![]);
                let gv = g.op("Add", &[&t, &cth], vec![]);
                let gv = g.op("Sub", &[&gv, &r], vec![]);
                let gp = gp_of(&mut g, &th);
                let step = g.op("Div", &[&gv, &gp], vec![]);
                t = g.op("Sub", &[&t, &step], vec![]);
            }
            let th = g.op("Tanh", &[&t], vec![]);
            let shift = g.op("Mul", &[&th, &u_hat], vec![]);
            h = if k == 0 { g.op_named("Sub", &[&h, &shift], vec![], "z") } else { g.op("Sub", &[&h, &shift], vec![]) };
            let gp = gp_of(&mut g, &th);
            let ld = g.op("Log", &[&gp], vec![]);
            log_det = Some(match log_det {
                None => ld,
                Some(s) => g.op("Add", &[&s, &ld], vec![]),
            });
            g.pop_scope();
        }
        g.push_scope("prior");
        let sq = g.op("Mul", &[&h, &h], vec![]);
        let axes = g.const_i64_vec(&[-1]);
        let ss = g.op("ReduceSum", &[&sq, &axes], vec![attr_int("keepdims", 1)]);
        let half = g.const_f32_scalar(-0.5);
        let lp = g.op("Mul", &[&ss, &half], vec![]);
        let c = g.const_f32_scalar(LN_2PI as f32);
        let lp = match log_det {
            None => g.op_named("Sub", &[&lp, &c], vec![], "log_prob"),
            Some(d) => {
                let lp = g.op("Sub", &[&lp, &c], vec![]);
                g.op_named("Sub", &[&lp, &d], vec![], "log_prob")
            }
        };
        g.pop_scope();
        let n = || Dim::Param("n".into());
        g.output(&h, DataType::Float, &[n(), Dim::Fixed(2)]);
        g.output(&lp, DataType::Float, &[n(), Dim::Fixed(1)]);
        Ok(g.finish())
    }

    /// ONNX of the inverse (generative) direction: input `z [n, 2]`, output `x [n, 2]`.
    pub fn export_inverse(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("inverse", "z");
        let mut h = "z".to_string();
        let last = self.layers.len().saturating_sub(1);
        for (k, l) in self.layers.iter().enumerate() {
            let [w, b, u_hat, ..] = l.export_consts(&mut g)?;
            g.push_scope(&l.name);
            let t = g.op("MatMul", &[&h, &w], vec![]);
            let t = g.op("Add", &[&t, &b], vec![]);
            let th = g.op("Tanh", &[&t], vec![]);
            let shift = g.op("Mul", &[&th, &u_hat], vec![]);
            h = if k == last {
                g.op_named("Add", &[&h, &shift], vec![], "x")
            } else {
                g.op("Add", &[&h, &shift], vec![])
            };
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
        let mut flow = PlanarFlow::new(PlanarConfig { layers: 6, ..PlanarConfig::default() }, 3)?;
        flow.params.randomize(1.5)?;
        // Points well outside the standardised data (std 4.5), random layers with |c| up to ~5.
        let x = (points(16, 1) * 3.0)?;
        let (z, lp, check) = flow.forward_with_residual(&x)?;
        assert!(check.residual < 1e-6, "Newton residual {}", check.residual);
        let back = flow.inverse(&z)?;
        assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
        // log p(x) = log N(z) + log|det ∂z/∂x| by central differences of the forward map.
        let xs: Vec<Vec<f32>> = x.to_vec2()?;
        let lps: Vec<Vec<f32>> = lp.to_vec2()?;
        let zs: Vec<Vec<f32>> = z.to_vec2()?;
        let eps = 1e-2f32;
        for (i, p) in xs.iter().enumerate() {
            let mut jac = [[0f64; 2]; 2];
            for d in 0..2 {
                let (mut hi, mut lo) = (p.clone(), p.clone());
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
            assert!((prior + log_det - lps[i][0] as f64).abs() < 3e-2, "{} vs {}", prior + log_det, lps[i][0]);
        }
        Ok(())
    }

    #[test]
    fn onnx_exports_match_candle() -> Result<()> {
        use crate::zoo::tract_run::run_tract_f32;
        let mut flow = PlanarFlow::new(PlanarConfig { layers: 4, ..PlanarConfig::default() }, 5)?;
        flow.params.randomize(1.0)?;
        let x = points(5, 2);
        let (z, _) = flow.forward(&x)?;
        let z_onnx = run_tract_f32(&flow.export_forward()?, &x)?;
        let want: Vec<f32> = z.flatten_all()?.to_vec1()?;
        assert!(want.iter().zip(&z_onnx).all(|(a, b)| (a - b).abs() < 1e-5), "forward");
        let x_onnx = run_tract_f32(&flow.export_inverse()?, &z)?;
        let want: Vec<f32> = flow.inverse(&z)?.flatten_all()?.to_vec1()?;
        assert!(want.iter().zip(&x_onnx).all(|(a, b)| (a - b).abs() < 1e-5), "inverse");
        Ok(())
    }
}
