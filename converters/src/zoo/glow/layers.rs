//! Glow's invertible layers, each with a candle forward (data → latent, with its
//! log-determinant), a candle inverse, and both directions as ONNX:
//!
//! - [`ActNorm`]: per-channel `y = x ⊙ s + b` (ONNX `Mul` + `Add`; inverse `Sub` + `Div`),
//!   initialised from the first batch so that every channel has zero mean and unit variance;
//!   log-det `H·W·Σ log|s|`, the same for every sample.
//! - [`InvConv`]: the invertible 1×1 convolution `W = P·L·(U + diag(sign·exp(log_s)))` (LU
//!   parameterisation, `P` and `sign` fixed); ONNX `Conv` with `W` forward and `W⁻¹` (computed in
//!   f64 at export) inverse; log-det `H·W·Σ log_s`.
//! - [`Coupling`]: affine coupling on channel halves, `y_b = x_b ⊙ exp(s) + t` with
//!   `(raw, t) = NN(x_a)` (Conv 3×3 → ReLU → Conv 1×1 → ReLU → zero-initialised Conv 3×3) and
//!   `s = σ ⊙ tanh(raw)` (σ a learned per-channel bound); log-det `Σ s`, per sample.
//! - [`squeeze`] / [`unsqueeze`]: `[N, C, H, W] ↔ [N, 4C, H/2, W/2]` by Reshape → Transpose →
//!   Reshape.

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor, Var};

use super::linalg;
use crate::zoo::layers::{export_tensor, tensor_data, Params, ZooLayer};
use crate::zoo::onnx_builder::{attr_int, attr_ints, GraphBuilder};
use crate::zoo::rng::SplitMix64;
use crate::zoo::vae::Conv2d;

/// `[N, C, H, W]` → `[N, 4C, H/2, W/2]`: output channel `4c + 2i + j` holds pixel `(2y + i, 2x + j)`
/// of channel `c`.
pub fn squeeze(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / 2, 2, w / 2, 2))?.permute(vec![0, 1, 3, 5, 2, 4])?.reshape((n, 4 * c, h / 2, w / 2))
}

/// The inverse of [`squeeze`]: `[N, 4C, H, W]` → `[N, C, 2H, 2W]`.
pub fn unsqueeze(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c4, h, w) = x.dims4()?;
    x.reshape((n, c4 / 4, 2, 2, h, w))?.permute(vec![0, 1, 4, 2, 5, 3])?.reshape((n, c4 / 4, 2 * h, 2 * w))
}

/// ONNX [`squeeze`] of `x [n, c, h, w]`.
pub fn export_squeeze(g: &mut GraphBuilder, x: &str, c: usize, h: usize, w: usize) -> String {
    let (c, h, w) = (c as i64, h as i64, w as i64);
    g.push_scope("squeeze");
    let s6 = g.const_i64_vec(&[-1, c, h / 2, 2, w / 2, 2]);
    let y = g.op("Reshape", &[x, &s6], vec![]);
    let y = g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 1, 3, 5, 2, 4])]);
    let s4 = g.const_i64_vec(&[-1, 4 * c, h / 2, w / 2]);
    let y = g.op("Reshape", &[&y, &s4], vec![]);
    g.pop_scope();
    y
}

/// ONNX [`unsqueeze`] of `x [n, c4, h, w]`, its output optionally named `output`.
pub fn export_unsqueeze(g: &mut GraphBuilder, x: &str, c4: usize, h: usize, w: usize, output: Option<&str>) -> String {
    let (c, h, w) = ((c4 / 4) as i64, h as i64, w as i64);
    g.push_scope("unsqueeze");
    let s6 = g.const_i64_vec(&[-1, c, 2, 2, h, w]);
    let y = g.op("Reshape", &[x, &s6], vec![]);
    let y = g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 1, 4, 2, 5, 3])]);
    let s4 = g.const_i64_vec(&[-1, c, 2 * h, 2 * w]);
    let y = match output {
        Some(name) => g.op_named("Reshape", &[&y, &s4], vec![], name),
        None => g.op("Reshape", &[&y, &s4], vec![]),
    };
    g.pop_scope();
    y
}

/// ONNX `Slice` of channels `start..end` (axis 1).
pub fn slice_channels(g: &mut GraphBuilder, x: &str, start: usize, end: usize) -> String {
    let starts = g.const_i64_vec(&[start as i64]);
    let ends = g.const_i64_vec(&[end as i64]);
    let axes = g.const_i64_vec(&[1]);
    g.op("Slice", &[x, &starts, &ends, &axes], vec![])
}

/// ONNX `Reshape` of `x` to `[-1, dims…]`.
pub fn reshape(g: &mut GraphBuilder, x: &str, dims: &[usize]) -> String {
    let shape: Vec<i64> = std::iter::once(-1).chain(dims.iter().map(|&d| d as i64)).collect();
    let shape = g.const_i64_vec(&shape);
    g.op("Reshape", &[x, &shape], vec![])
}

/// Per-channel affine normalisation with data-dependent initialisation.
#[derive(Debug)]
pub struct ActNorm {
    name: String,
    channels: usize,
    /// Pixels per channel (`H·W`), the multiplicity of each log-scale in the log-det.
    hw: usize,
    log_scale: Var,
    bias: Var,
}

impl ActNorm {
    /// The identity map on `channels` channels of `hw` pixels (until [`ActNorm::initialize`]).
    pub fn new(p: &mut Params, name: &str, channels: usize, hw: usize) -> Result<Self> {
        let shape = [1, channels, 1, 1];
        Ok(Self {
            name: name.into(),
            channels,
            hw,
            log_scale: p.constant(&format!("{name}.log_scale"), &shape, 0.0)?,
            bias: p.constant(&format!("{name}.bias"), &shape, 0.0)?,
        })
    }

    /// Sets `s`, `b` so that `x ⊙ s + b` has zero mean and unit variance per channel over the
    /// batch `x [N, C, H, W]` (Glow's data-dependent initialisation).
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let c = self.channels;
        let flat = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
        let mean = flat.mean_keepdim(1)?;
        let std = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?.sqrt()?;
        let log_scale = (std + 1e-6)?.log()?.neg()?;
        let bias = mean.mul(&log_scale.exp()?)?.neg()?;
        self.log_scale.set(&log_scale.reshape((1, c, 1, 1))?)?;
        self.bias.set(&bias.reshape((1, c, 1, 1))?)?;
        Ok(())
    }

    fn scale(&self) -> candle_core::Result<Tensor> {
        self.log_scale.as_tensor().exp()
    }

    /// `(x ⊙ s + b, H·W·Σ log s)` (the log-det a scalar tensor).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let y = x.broadcast_mul(&self.scale()?)?.broadcast_add(self.bias.as_tensor())?;
        Ok((y, (self.log_scale.as_tensor().sum_all()? * self.hw as f64)?))
    }

    /// `(y − b) / s`.
    pub fn inverse(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        y.broadcast_sub(self.bias.as_tensor())?.broadcast_div(&self.scale()?)
    }

    /// The log-det of the exported map, `H·W·Σ ln|s|` over the stored f32 scales, in f64.
    pub fn log_det(&self) -> Result<f64> {
        let s = tensor_data(&self.scale()?)?;
        Ok(self.hw as f64 * s.iter().map(|&v| (v as f64).abs().ln()).sum::<f64>())
    }

    fn initializers(&self, g: &mut GraphBuilder) -> Result<(String, String)> {
        let s = export_tensor(g, &format!("{}.scale", self.name), &self.scale()?)?;
        let b = export_tensor(g, &format!("{}.bias", self.name), self.bias.as_tensor())?;
        Ok((s, b))
    }

    /// ONNX `Mul(x, s) → Add(b)`; returns the output and the constant log-det.
    pub fn export_forward(&self, g: &mut GraphBuilder, x: &str) -> Result<(String, f64)> {
        let (s, b) = self.initializers(g)?;
        g.push_scope(&self.name);
        let y = g.op("Mul", &[x, &s], vec![]);
        let y = g.op("Add", &[&y, &b], vec![]);
        g.pop_scope();
        Ok((y, self.log_det()?))
    }

    /// ONNX `Sub(y, b) → Div(s)`, reading the same initializers as the forward graph.
    pub fn export_inverse(&self, g: &mut GraphBuilder, y: &str) -> Result<String> {
        let (s, b) = self.initializers(g)?;
        g.push_scope(&self.name);
        let x = g.op("Sub", &[y, &b], vec![]);
        let x = g.op("Div", &[&x, &s], vec![]);
        g.pop_scope();
        Ok(x)
    }
}

/// The weights of an [`InvConv`] as exported: `W`, `W⁻¹` (both `C × C`, row-major, f64) and
/// `Σ log|diag U|` (the log-det per pixel).
#[derive(Clone, Debug)]
pub struct InvConvWeights {
    /// `W = P·L·U`.
    pub w: Vec<f64>,
    /// `W⁻¹`, computed in f64.
    pub w_inv: Vec<f64>,
    /// `log|det W| = Σ log|diag U|`.
    pub log_det: f64,
}

/// The invertible 1×1 convolution in LU form.
#[derive(Debug)]
pub struct InvConv {
    name: String,
    c: usize,
    hw: usize,
    /// Fixed permutation matrix `P` (f64, and as a tensor).
    perm: Vec<f64>,
    perm_t: Tensor,
    /// Fixed signs of `diag U` (f64, and as a tensor).
    sign: Vec<f64>,
    sign_t: Tensor,
    lower: Var,
    upper: Var,
    log_s: Var,
    mask_lower: Tensor,
    mask_upper: Tensor,
    eye: Tensor,
}

impl InvConv {
    /// `W` initialised to a random rotation drawn from `rng`, factored as `P·L·U`.
    pub fn new(p: &mut Params, name: &str, c: usize, hw: usize, rng: &mut SplitMix64) -> Result<Self> {
        let q = linalg::random_orthogonal(c, rng);
        let f = linalg::lu(&q, c).ok_or_else(|| anyhow!("{name}: singular initial rotation"))?;
        let dev = Device::Cpu;
        let (mut lo, mut up, mut mask_l, mut mask_u) =
            (vec![0f32; c * c], vec![0f32; c * c], vec![0f32; c * c], vec![0f32; c * c]);
        for i in 0..c {
            for j in 0..c {
                if j < i {
                    lo[i * c + j] = f.l[i * c + j] as f32;
                    mask_l[i * c + j] = 1.0;
                } else if j > i {
                    up[i * c + j] = f.u[i * c + j] as f32;
                    mask_u[i * c + j] = 1.0;
                }
            }
        }
        let sign: Vec<f64> = (0..c).map(|i| f.u[i * c + i].signum()).collect();
        let log_s: Vec<f32> = (0..c).map(|i| f.u[i * c + i].abs().ln() as f32).collect();
        let lower = p.constant(&format!("{name}.lower"), &[c, c], 0.0)?;
        lower.set(&Tensor::from_vec(lo, (c, c), &dev)?)?;
        let upper = p.constant(&format!("{name}.upper"), &[c, c], 0.0)?;
        upper.set(&Tensor::from_vec(up, (c, c), &dev)?)?;
        let log_s_var = p.constant(&format!("{name}.log_s"), &[c], 0.0)?;
        log_s_var.set(&Tensor::from_vec(log_s, c, &dev)?)?;
        let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(Self {
            name: name.into(),
            c,
            hw,
            perm_t: Tensor::from_vec(as_f32(&f.p), (c, c), &dev)?,
            perm: f.p,
            sign_t: Tensor::from_vec(as_f32(&sign), c, &dev)?,
            sign,
            lower,
            upper,
            log_s: log_s_var,
            mask_lower: Tensor::from_vec(mask_l, (c, c), &dev)?,
            mask_upper: Tensor::from_vec(mask_u, (c, c), &dev)?,
            eye: Tensor::eye(c, DType::F32, &dev)?,
        })
    }

    /// Trainable scalars that the masks ignore (the unused triangles of `lower` and `upper`).
    pub fn masked_scalars(&self) -> usize {
        self.c * (self.c + 1)
    }

    /// `W [C, C]` in candle, differentiable in the factors.
    pub fn weight(&self) -> candle_core::Result<Tensor> {
        let l = (self.lower.as_tensor().mul(&self.mask_lower)? + &self.eye)?;
        let d = self.sign_t.mul(&self.log_s.as_tensor().exp()?)?.reshape((1, self.c))?;
        let u = (self.upper.as_tensor().mul(&self.mask_upper)? + self.eye.broadcast_mul(&d)?)?;
        self.perm_t.matmul(&l)?.matmul(&u)
    }

    /// `(W ⋆ x, H·W·Σ log_s)` (the log-det a scalar tensor).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let w = self.weight()?.reshape((self.c, self.c, 1, 1))?;
        Ok((x.conv2d(&w, 0, 1, 1, 1)?, (self.log_s.as_tensor().sum_all()? * self.hw as f64)?))
    }

    /// `W`, `W⁻¹` and `log|det W|` in f64 from the current factors.
    pub fn weights(&self) -> Result<InvConvWeights> {
        let c = self.c;
        let lo = tensor_data(self.lower.as_tensor())?;
        let up = tensor_data(self.upper.as_tensor())?;
        let ls = tensor_data(self.log_s.as_tensor())?;
        let mut l = linalg::identity(c);
        let mut u = vec![0f64; c * c];
        for i in 0..c {
            for j in 0..c {
                if j < i {
                    l[i * c + j] = lo[i * c + j] as f64;
                } else if j > i {
                    u[i * c + j] = up[i * c + j] as f64;
                }
            }
            u[i * c + i] = self.sign[i] * (ls[i] as f64).exp();
        }
        let w = linalg::matmul(&linalg::matmul(&self.perm, &l, c), &u, c);
        let w_inv = linalg::inverse(&w, c).ok_or_else(|| anyhow!("{}: W is singular", self.name))?;
        Ok(InvConvWeights { w, w_inv, log_det: ls.iter().map(|&v| v as f64).sum() })
    }

    fn conv_tensor(&self, m: &[f64]) -> Result<Tensor> {
        let v: Vec<f32> = m.iter().map(|&x| x as f32).collect();
        Ok(Tensor::from_vec(v, (self.c, self.c, 1, 1), &Device::Cpu)?)
    }

    /// `W⁻¹ ⋆ y` with the f64 inverse rounded to f32 (what the exported inverse computes).
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.conv2d(&self.conv_tensor(&self.weights()?.w_inv)?, 0, 1, 1, 1)?)
    }

    fn export_conv(&self, g: &mut GraphBuilder, x: &str, suffix: &str, m: &[f64]) -> String {
        let c = self.c as i64;
        let data: Vec<f32> = m.iter().map(|&v| v as f32).collect();
        let w = g.initializer_f32(&format!("{}.{suffix}", self.name), &[c, c, 1, 1], &data);
        g.push_scope(&self.name);
        let attrs = vec![attr_ints("kernel_shape", &[1, 1]), attr_ints("strides", &[1, 1]), attr_ints("pads", &[0; 4])];
        let y = g.op("Conv", &[x, &w], attrs);
        g.pop_scope();
        y
    }

    /// ONNX `Conv(x, W)` (1×1, initializer `<name>.weight`); returns the output and the
    /// constant log-det `H·W·Σ log|diag U|`.
    pub fn export_forward(&self, g: &mut GraphBuilder, x: &str) -> Result<(String, f64)> {
        let w = self.weights()?;
        Ok((self.export_conv(g, x, "weight", &w.w), self.hw as f64 * w.log_det))
    }

    /// ONNX `Conv(y, W⁻¹)` (initializer `<name>.weight_inv`).
    pub fn export_inverse(&self, g: &mut GraphBuilder, y: &str) -> Result<String> {
        let w = self.weights()?;
        Ok(self.export_conv(g, y, "weight_inv", &w.w_inv))
    }
}

/// Affine coupling on channel halves with a small convolutional net.
#[derive(Debug)]
pub struct Coupling {
    name: String,
    half: usize,
    conv1: Conv2d,
    conv2: Conv2d,
    out: Conv2d,
    s_bound: Var,
}

impl Coupling {
    /// A coupling on `channels` channels (even) with `hidden` channels in its net; the net's
    /// last convolution starts at zero, so the layer starts as the identity.
    pub fn new(p: &mut Params, name: &str, channels: usize, hidden: usize) -> Result<Self> {
        let half = channels / 2;
        let conv1 = Conv2d::new(p, &format!("{name}.conv1"), half, hidden, 3, 1, 1)?;
        let conv2 = Conv2d::new(p, &format!("{name}.conv2"), hidden, hidden, 1, 1, 0)?;
        let out = Conv2d::new(p, &format!("{name}.out"), hidden, channels, 3, 1, 1)?;
        let out_w = format!("{name}.out.weight");
        let var = p.all().iter().find(|q| q.name == out_w).map(|q| q.var.clone());
        let var = var.ok_or_else(|| anyhow!("{out_w} not created"))?;
        var.set(&var.zeros_like()?)?;
        let s_bound = p.constant(&format!("{name}.s_bound"), &[1, half, 1, 1], 1.0)?;
        Ok(Self { name: name.into(), half, conv1, conv2, out, s_bound })
    }

    /// `(s, t)` of the conditioning half `a`.
    fn net(&self, a: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.conv1.forward(a)?.relu()?;
        let h = self.conv2.forward(&h)?.relu()?;
        let o = self.out.forward(&h)?;
        let t = o.narrow(1, 0, self.half)?;
        let s = o.narrow(1, self.half, self.half)?.tanh()?.broadcast_mul(self.s_bound.as_tensor())?;
        Ok((s, t))
    }

    fn halves(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((x.narrow(1, 0, self.half)?.contiguous()?, x.narrow(1, self.half, self.half)?.contiguous()?))
    }

    /// `(concat(a, b ⊙ exp(s) + t), Σ s [N, 1])`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (a, b) = self.halves(x)?;
        let (s, t) = self.net(&a)?;
        let b = (b.mul(&s.exp()?)? + t)?;
        Ok((Tensor::cat(&[&a, &b], 1)?, s.flatten_from(1)?.sum_keepdim(1)?))
    }

    /// `concat(a, (b − t) ⊙ exp(−s))`.
    pub fn inverse(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let (a, b) = self.halves(y)?;
        let (s, t) = self.net(&a)?;
        let b = (b - t)?.mul(&s.neg()?.exp()?)?;
        Tensor::cat(&[&a, &b], 1)
    }

    /// ONNX of the net: `(s, t)` value names for the conditioning half `a`.
    fn export_net(&self, g: &mut GraphBuilder, a: &str) -> Result<(String, String)> {
        let h = self.conv1.export(g, a)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.conv2.export(g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let o = self.out.export(g, &h)?;
        let bound = export_tensor(g, &format!("{}.s_bound", self.name), self.s_bound.as_tensor())?;
        g.push_scope(&self.name);
        let t = slice_channels(g, &o, 0, self.half);
        let raw = slice_channels(g, &o, self.half, 2 * self.half);
        let s = g.op("Tanh", &[&raw], vec![]);
        let s = g.op("Mul", &[&s, &bound], vec![]);
        g.pop_scope();
        Ok((s, t))
    }

    fn export_halves(&self, g: &mut GraphBuilder, x: &str) -> (String, String) {
        g.push_scope(&self.name);
        let out = (slice_channels(g, x, 0, self.half), slice_channels(g, x, self.half, 2 * self.half));
        g.pop_scope();
        out
    }

    /// ONNX forward; returns the output and the per-sample log-det `[n, 1]` (`ReduceSum` of
    /// `s` flattened).
    pub fn export_forward(&self, g: &mut GraphBuilder, x: &str, pixels: usize) -> Result<(String, String)> {
        let (a, b) = self.export_halves(g, x);
        let (s, t) = self.export_net(g, &a)?;
        g.push_scope(&self.name);
        let e = g.op("Exp", &[&s], vec![]);
        let b = g.op("Mul", &[&b, &e], vec![]);
        let b = g.op("Add", &[&b, &t], vec![]);
        let y = g.op("Concat", &[&a, &b], vec![attr_int("axis", 1)]);
        let flat = reshape(g, &s, &[self.half * pixels]);
        let axes = g.const_i64_vec(&[1]);
        let ld = g.op("ReduceSum", &[&flat, &axes], vec![attr_int("keepdims", 1)]);
        g.pop_scope();
        Ok((y, ld))
    }

    /// ONNX inverse: `concat(a, (b − t) ⊙ exp(−s))`.
    pub fn export_inverse(&self, g: &mut GraphBuilder, y: &str) -> Result<String> {
        let (a, b) = self.export_halves(g, y);
        let (s, t) = self.export_net(g, &a)?;
        g.push_scope(&self.name);
        let b = g.op("Sub", &[&b, &t], vec![]);
        let ns = g.op("Neg", &[&s], vec![]);
        let e = g.op("Exp", &[&ns], vec![]);
        let b = g.op("Mul", &[&b, &e], vec![]);
        let x = g.op("Concat", &[&a, &b], vec![attr_int("axis", 1)]);
        g.pop_scope();
        Ok(x)
    }
}
