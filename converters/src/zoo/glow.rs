//! Glow (Kingma & Dhariwal, 2018): a multi-scale normalizing flow on small images, here the
//! procedural 16×16 glyphs ([`crate::zoo::vae::glyphs`]) dequantised to `[-0.5, 0.5)`
//! ([`data`]).
//!
//! The flow maps an image `x [n, 1, 16, 16]` to a latent `z [n, 256]` of the same dimension
//! through `L` levels. Each level squeezes (`[C, H, W]` → `[4C, H/2, W/2]`) and applies `K`
//! steps of actnorm → invertible 1×1 convolution → affine coupling ([`layers`]); every level but
//! the last then factors out half of its channels as part of `z` (multi-scale split), so
//! deeper levels run on fewer, coarser pixels. The latent is the concatenation of the
//! factored-out halves and the last level's output, all under a standard normal prior:
//! `log p(x) = log N(z; 0, I) + Σ log|det|` (actnorm and 1×1-conv terms are constants of the
//! weights, the couplings' terms depend on `x`).
//!
//! Both directions are exported as ONNX graphs reading the same initializers
//! ([`Glow::export_forward`]: `x [n, 1, 16, 16]` → `z [n, 256]`, `log_prob [n, 1]`;
//! [`Glow::export_inverse`]: `z [n, 256]` → `x [n, 1, 16, 16]`). The 1×1 convolution is stored
//! twice, as `W` for `forward` and as `W⁻¹` (computed in f64 at export) for `inverse`; every
//! other weight is shared, so the two entries of one `.mote` store it once.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::glow::{Glow, GlowConfig};
//! let cfg = GlowConfig { steps: 1, hidden: 4, ..GlowConfig::default() };
//! let glow = Glow::new(cfg, 0)?;
//! let x = Tensor::randn(0f32, 0.2, (2, 1, 16, 16), &Device::Cpu)?;
//! glow.initialize(&x)?;
//! let (z, log_prob) = glow.forward(&x)?;
//! assert_eq!((z.dims(), log_prob.dims()), (&[2, 256][..], &[2, 1][..]));
//! let back = glow.inverse(&z)?;
//! assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod data;
pub mod layers;
pub mod linalg;
pub mod quality;
pub mod train;

pub use card::write_glow_card;
pub use train::{train_glow, GlowReport, GlowTrainOptions};

use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use self::layers::{export_squeeze, export_unsqueeze, reshape, slice_channels, squeeze, unsqueeze};
use self::layers::{ActNorm, Coupling, InvConv};
use super::layers::Params;
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};
use super::rng::SplitMix64;

/// `ln(2π)`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The converter hint that keeps 1×1 convolutions as runtime `Conv` ops
/// ([`crate::import::pointwise`]), written into both graphs' metadata.
pub use crate::import::pointwise::{POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE};

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlowConfig {
    /// Side of the square single-channel input images.
    pub side: usize,
    /// Levels `L` (each squeezes once; all but the last factor out half their channels).
    pub levels: usize,
    /// Flow steps `K` per level.
    pub steps: usize,
    /// Hidden channels of the coupling nets.
    pub hidden: usize,
    /// Batch bound `n` of the exported graphs (the converter's `--dim n=…`).
    pub max_batch: usize,
}

impl Default for GlowConfig {
    /// The zoo model: 16×16 images, 3 levels of 3 steps, coupling nets with 32 hidden channels,
    /// exported for batches of up to 8 images.
    fn default() -> Self {
        Self { side: 16, levels: 3, steps: 3, hidden: 32, max_batch: 8 }
    }
}

impl GlowConfig {
    /// Dimensions of an image (and of the latent).
    pub fn dims(&self) -> usize {
        self.side * self.side
    }

    /// `(channels, side)` of every level after its squeeze.
    pub fn level_shapes(&self) -> Vec<(usize, usize)> {
        let (mut c, mut s) = (1, self.side);
        let mut out = Vec::new();
        for l in 0..self.levels {
            c *= 4;
            s /= 2;
            out.push((c, s));
            if l + 1 < self.levels {
                c /= 2;
            }
        }
        out
    }

    /// `(channels, side)` of the latent parts in the order they are concatenated in `z`: the
    /// halves factored out by levels `0..L-1`, then the last level's output.
    pub fn latent_parts(&self) -> Vec<(usize, usize)> {
        let shapes = self.level_shapes();
        let last = shapes.len().saturating_sub(1);
        shapes.iter().enumerate().map(|(l, &(c, s))| (if l < last { c / 2 } else { c }, s)).collect()
    }
}

/// One flow step: actnorm → invertible 1×1 convolution → affine coupling.
#[derive(Debug)]
struct Step {
    actnorm: ActNorm,
    invconv: InvConv,
    coupling: Coupling,
}

/// One level: its steps, and its shape after the squeeze.
#[derive(Debug)]
struct Level {
    channels: usize,
    side: usize,
    steps: Vec<Step>,
}

/// The Glow flow.
#[derive(Debug)]
pub struct Glow {
    cfg: GlowConfig,
    params: Params,
    levels: Vec<Level>,
}

/// Running sums of a forward pass's log-determinants.
struct LogDets {
    /// Sample-independent terms (actnorm, 1×1 conv): a scalar tensor.
    constant: Option<Tensor>,
    /// Coupling terms `[n, 1]`.
    per_sample: Option<Tensor>,
}

fn add(acc: Option<Tensor>, v: Tensor) -> candle_core::Result<Option<Tensor>> {
    Ok(Some(match acc {
        None => v,
        Some(a) => (a + v)?,
    }))
}

impl Glow {
    /// A flow with fresh weights drawn from `seed`: rotations for the 1×1 convolutions, zero
    /// last layers in the coupling nets (so every coupling starts as the identity) and identity
    /// actnorms until [`Glow::initialize`].
    pub fn new(cfg: GlowConfig, seed: u64) -> Result<Self> {
        if cfg.levels == 0 || cfg.steps == 0 || !cfg.side.is_multiple_of(1 << cfg.levels) {
            bail!("glow: {cfg:?} needs levels ≥ 1, steps ≥ 1 and a side divisible by 2^levels");
        }
        let mut p = Params::new(seed);
        let mut rng = SplitMix64::new(seed ^ 0x91_0c0b);
        let mut levels = Vec::new();
        for (l, (c, s)) in cfg.level_shapes().into_iter().enumerate() {
            let mut steps = Vec::new();
            for k in 0..cfg.steps {
                let name = format!("l{l}.s{k}");
                steps.push(Step {
                    actnorm: ActNorm::new(&mut p, &format!("{name}.actnorm"), c, s * s)?,
                    invconv: InvConv::new(&mut p, &format!("{name}.invconv"), c, s * s, &mut rng)?,
                    coupling: Coupling::new(&mut p, &format!("{name}.coupling"), c, cfg.hidden)?,
                });
            }
            levels.push(Level { channels: c, side: s, steps });
        }
        Ok(Self { cfg, params: p, levels })
    }

    /// The architecture.
    pub fn config(&self) -> &GlowConfig {
        &self.cfg
    }

    /// The trainable parameters (as candle variables; `L` and `U` are stored as full matrices).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Trainable scalars, not counting the unused triangles of the LU factors' storage.
    pub fn trainable_scalars(&self) -> usize {
        let masked: usize = self.levels.iter().flat_map(|l| &l.steps).map(|s| s.invconv.masked_scalars()).sum();
        self.params.count() - masked
    }

    /// Runs the forward pass, initialising every actnorm from its input first when `init`.
    fn run_forward(&self, x: &Tensor, init: bool) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        let mut ld = LogDets { constant: None, per_sample: None };
        let mut zs = Vec::new();
        for (l, level) in self.levels.iter().enumerate() {
            h = squeeze(&h)?;
            for step in &level.steps {
                if init {
                    step.actnorm.initialize(&h)?;
                }
                let (y, a) = step.actnorm.forward(&h)?;
                let (y, b) = step.invconv.forward(&y)?;
                let (y, c) = step.coupling.forward(&y)?;
                ld.constant = add(add(ld.constant, a)?, b)?;
                ld.per_sample = add(ld.per_sample, c)?;
                h = y;
            }
            if l + 1 < self.levels.len() {
                let half = level.channels / 2;
                zs.push(h.narrow(1, half, half)?.flatten_from(1)?);
                h = h.narrow(1, 0, half)?;
            }
        }
        zs.push(h.flatten_from(1)?);
        let z = Tensor::cat(&zs, 1)?;
        let c = (ld.constant.unwrap_or(Tensor::new(0f32, x.device())?) - 0.5 * self.cfg.dims() as f64 * LN_2PI)?;
        let mut lp = (z.sqr()?.sum_keepdim(D::Minus1)? * -0.5)?.broadcast_add(&c)?;
        if let Some(d) = ld.per_sample {
            lp = (lp + d)?;
        }
        Ok((z, lp))
    }

    /// Data → latent: `(z [n, D], log p(x) [n, 1])` for images `x [n, 1, side, side]`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.run_forward(x, false)
    }

    /// Glow's data-dependent initialisation: sets every actnorm from a forward pass of the
    /// batch `x`, so that its outputs have zero mean and unit variance per channel.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        self.run_forward(x, true).map(|_| ())
    }

    /// Latent → data: the exact inverse of [`Glow::forward`]'s `z` (`[n, D]` → `[n, 1, side, side]`).
    pub fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        let n = z.dim(0)?;
        let parts = self.cfg.latent_parts();
        let mut offset = 0;
        let mut pieces = Vec::new();
        for &(c, s) in &parts {
            pieces.push(z.narrow(1, offset, c * s * s)?.reshape((n, c, s, s))?);
            offset += c * s * s;
        }
        let mut h = pieces.pop().ok_or_else(|| anyhow::anyhow!("glow: no latent parts"))?;
        for (l, level) in self.levels.iter().enumerate().rev() {
            if l + 1 < self.levels.len() {
                h = Tensor::cat(&[&h, &pieces[l]], 1)?;
            }
            for step in level.steps.iter().rev() {
                h = step.coupling.inverse(&h)?;
                h = step.invconv.inverse(&h)?;
                h = step.actnorm.inverse(&h)?;
            }
            h = unsqueeze(&h)?;
        }
        Ok(h)
    }

    fn graph(&self, name: &str) -> GraphBuilder {
        let mut g = GraphBuilder::new(&format!("glow_{name}"));
        g.metadata("mote.family", "glow");
        g.metadata("mote.flow_direction", name);
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata(POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE);
        g
    }

    fn image_dims(&self) -> [Dim; 4] {
        let side = Dim::Fixed(self.cfg.side as i64);
        [Dim::Param("n".into()), Dim::Fixed(1), side.clone(), side]
    }

    /// ONNX of the forward direction: input `x [n, 1, side, side]`, outputs `z [n, D]` and
    /// `log_prob [n, 1]` = `-½ ReduceSum(z²) + (constant log-dets − D/2 ln 2π) + Σ coupling log-dets`.
    pub fn export_forward(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("forward");
        g.input("x", DataType::Float, &self.image_dims());
        let mut h = "x".to_string();
        let (mut constant, mut per_sample) = (0f64, Vec::new());
        let mut zs = Vec::new();
        let mut prev = (1, self.cfg.side);
        for (l, level) in self.levels.iter().enumerate() {
            h = export_squeeze(&mut g, &h, prev.0, prev.1, prev.1);
            let pixels = level.side * level.side;
            for step in &level.steps {
                let (y, a) = step.actnorm.export_forward(&mut g, &h)?;
                let (y, b) = step.invconv.export_forward(&mut g, &y)?;
                let (y, d) = step.coupling.export_forward(&mut g, &y, pixels)?;
                constant += a + b;
                per_sample.push(d);
                h = y;
            }
            let (c, s) = (level.channels, level.side);
            if l + 1 < self.levels.len() {
                g.push_scope(&format!("l{l}.split"));
                let z = slice_channels(&mut g, &h, c / 2, c);
                zs.push(reshape(&mut g, &z, &[c / 2 * s * s]));
                h = slice_channels(&mut g, &h, 0, c / 2);
                g.pop_scope();
                prev = (c / 2, s);
            } else {
                zs.push(reshape(&mut g, &h, &[c * s * s]));
            }
        }
        let parts: Vec<&str> = zs.iter().map(String::as_str).collect();
        let z = g.op_named("Concat", &parts, vec![attr_int("axis", 1)], "z");
        g.push_scope("prior");
        let sq = g.op("Mul", &[&z, &z], vec![]);
        let axes = g.const_i64_vec(&[1]);
        let ss = g.op("ReduceSum", &[&sq, &axes], vec![attr_int("keepdims", 1)]);
        let half = g.const_f32_scalar(-0.5);
        let lp = g.op("Mul", &[&ss, &half], vec![]);
        let c = g.const_f32_scalar((constant - 0.5 * self.cfg.dims() as f64 * LN_2PI) as f32);
        let mut lp = g.op("Add", &[&lp, &c], vec![]);
        let mut sum: Option<String> = None;
        for d in &per_sample {
            sum = Some(match sum {
                None => d.clone(),
                Some(acc) => g.op("Add", &[&acc, d], vec![]),
            });
        }
        if let Some(sum) = sum {
            lp = g.op_named("Add", &[&lp, &sum], vec![], "log_prob");
        }
        g.pop_scope();
        let n = || Dim::Param("n".into());
        g.output(&z, DataType::Float, &[n(), Dim::Fixed(self.cfg.dims() as i64)]);
        g.output(&lp, DataType::Float, &[n(), Dim::Fixed(1)]);
        Ok(g.finish())
    }

    /// ONNX of the inverse direction: input `z [n, D]`, output `x [n, 1, side, side]`.
    pub fn export_inverse(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("inverse");
        g.input("z", DataType::Float, &[Dim::Param("n".into()), Dim::Fixed(self.cfg.dims() as i64)]);
        let mut pieces = Vec::new();
        let mut offset = 0;
        g.push_scope("latent");
        for (c, s) in self.cfg.latent_parts() {
            let len = c * s * s;
            let part = slice_channels(&mut g, "z", offset, offset + len);
            pieces.push(reshape(&mut g, &part, &[c, s, s]));
            offset += len;
        }
        g.pop_scope();
        let mut h = pieces.pop().ok_or_else(|| anyhow::anyhow!("glow: no latent parts"))?;
        for (l, level) in self.levels.iter().enumerate().rev() {
            if l + 1 < self.levels.len() {
                h = g.op("Concat", &[&h, &pieces[l]], vec![attr_int("axis", 1)]);
            }
            for step in level.steps.iter().rev() {
                h = step.coupling.export_inverse(&mut g, &h)?;
                h = step.invconv.export_inverse(&mut g, &h)?;
                h = step.actnorm.export_inverse(&mut g, &h)?;
            }
            let name = (l == 0).then_some("x");
            h = export_unsqueeze(&mut g, &h, level.channels, level.side, level.side, name);
        }
        g.output(&h, DataType::Float, &self.image_dims());
        Ok(g.finish())
    }

    /// `W`, `W⁻¹` and `log|det W|` of every 1×1 convolution, by initializer base name
    /// (`l0.s0.invconv`, …), as exported.
    pub fn invconv_weights(&self) -> Result<Vec<(String, layers::InvConvWeights)>> {
        let mut out = Vec::new();
        for (l, level) in self.levels.iter().enumerate() {
            for (k, step) in level.steps.iter().enumerate() {
                out.push((format!("l{l}.s{k}.invconv"), step.invconv.weights()?));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::tract_run::run_tract_f32;
    use candle_core::Device;

    fn small() -> GlowConfig {
        GlowConfig { side: 8, levels: 2, steps: 2, hidden: 8, max_batch: 4 }
    }

    /// A flow with non-trivial weights everywhere (the zero-initialised coupling outputs and
    /// identity actnorms replaced by noise), so that every layer is exercised.
    fn random_glow() -> Result<(Glow, Tensor)> {
        let glow = Glow::new(small(), 3)?;
        let x = Tensor::randn(0f32, 0.3, (4, 1, 8, 8), &Device::Cpu)?;
        glow.initialize(&x)?;
        for p in glow.params.all() {
            if p.name.ends_with("out.weight") || p.name.ends_with("lower") || p.name.ends_with("upper") {
                let noise = Tensor::randn(0f32, 0.1, p.var.shape(), &Device::Cpu)?;
                p.var.set(&(p.var.as_tensor() + noise)?)?;
            }
        }
        Ok((glow, x))
    }

    #[test]
    fn squeeze_round_trips_and_orders_channels() -> Result<()> {
        let x = Tensor::arange(0f32, 32.0, &Device::Cpu)?.reshape((1, 2, 4, 4))?;
        let s = squeeze(&x)?;
        assert_eq!(s.dims(), &[1, 8, 2, 2]);
        // Channel 4c + 2i + j, pixel (y, x) = input channel c at (2y + i, 2x + j).
        let v = tensor_data(&s)?;
        assert_eq!(v[(4 + 2 + 1) * 4 + 2 + 1], 16.0 + 3.0 * 4.0 + 3.0);
        assert_eq!(tensor_data(&unsqueeze(&s)?)?, tensor_data(&x)?);
        Ok(())
    }

    #[test]
    fn inverse_undoes_forward_and_log_det_is_exact() -> Result<()> {
        let (glow, x) = random_glow()?;
        let (z, lp) = glow.forward(&x)?;
        let back = glow.inverse(&z)?;
        assert!(back.sub(&x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // Actnorm makes the initialising batch's channels zero-mean.
        let h = glow.levels[0].steps[0].actnorm.forward(&squeeze(&x)?)?.0;
        let m = h.transpose(0, 1)?.contiguous()?.reshape((4, ()))?.mean_keepdim(1)?;
        assert!(m.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
        // log p(x) against a finite-difference Jacobian of x → z for one image (64 dims).
        let x0 = x.narrow(0, 0, 1)?;
        let base = tensor_data(&glow.forward(&x0)?.0)?;
        let d = 64;
        let eps = 1e-2f64;
        let mut jac = vec![0f64; d * d];
        let xv = tensor_data(&x0)?;
        for j in 0..d {
            let mut up = xv.clone();
            let mut dn = xv.clone();
            up[j] += eps as f32;
            dn[j] -= eps as f32;
            let zu = tensor_data(&glow.forward(&Tensor::from_vec(up, (1, 1, 8, 8), &Device::Cpu)?)?.0)?;
            let zd = tensor_data(&glow.forward(&Tensor::from_vec(dn, (1, 1, 8, 8), &Device::Cpu)?)?.0)?;
            for i in 0..d {
                jac[i * d + j] = (zu[i] as f64 - zd[i] as f64) / (2.0 * eps);
            }
        }
        let f = linalg::lu(&jac, d).expect("invertible Jacobian");
        let log_det: f64 = (0..d).map(|i| f.u[i * d + i].abs().ln()).sum();
        let prior: f64 = -0.5 * base.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() - 0.5 * d as f64 * LN_2PI;
        let want = prior + log_det;
        let got = tensor_data(&lp)?[0] as f64;
        assert!((got - want).abs() < 0.02 * want.abs().max(1.0), "log p {got} vs finite differences {want}");
        Ok(())
    }

    #[test]
    fn exported_graphs_match_candle_in_tract() -> Result<()> {
        let (glow, x) = random_glow()?;
        let (z, lp) = glow.forward(&x)?;
        let path = std::env::temp_dir().join(format!("mote_glow_fwd_{}.onnx", std::process::id()));
        std::fs::write(&path, glow.export_forward()?)?;
        let input = crate::array::Array::f32(x.dims().to_vec(), tensor_data(&x)?);
        let got: Vec<Vec<f32>> =
            crate::verify::tract_reference(&path, &[input])?.iter().map(crate::array::Array::to_f32).collect();
        std::fs::remove_file(&path).ok();
        let max = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(max(&got[0], &tensor_data(&z)?) < 1e-4);
        assert!(max(&got[1], &tensor_data(&lp)?) < 1e-3, "{:?} vs {:?}", got[1], tensor_data(&lp)?);
        let inv = glow.export_inverse()?;
        let back = run_tract_f32(&inv, &z)?;
        assert!(max(&back, &tensor_data(&x)?) < 1e-4);
        for (name, w) in glow.invconv_weights()? {
            let c = (w.w.len() as f64).sqrt() as usize;
            let eye = linalg::matmul(&w.w, &w.w_inv, c);
            assert!(eye.iter().enumerate().all(|(k, v)| (v - if k % (c + 1) == 0 { 1.0 } else { 0.0 }).abs() < 1e-12));
            assert!(name.contains("invconv"));
        }
        Ok(())
    }
}
