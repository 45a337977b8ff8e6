//! The UNet's building blocks, each with a candle forward pass (written with differentiable
//! tensor ops only) and an ONNX export: [`GroupNorm`], [`ResBlock`], [`SelfAttention2d`] and
//! nearest-neighbour [`upsample2x`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use mote_converters::zoo::layers::{Params, ZooLayer};
//! use mote_converters::zoo::unet::blocks::GroupNorm;
//! let mut p = Params::new(1);
//! let gn = GroupNorm::new(&mut p, "gn", 8, 4)?;
//! let x = Tensor::arange(0f32, 64.0, &Device::Cpu)?.reshape((1, 8, 2, 4))?;
//! let y = gn.forward(&x)?;
//! // Each group of two channels (8 values) has mean 0 and variance ≈ 1.
//! let g0: Vec<f32> = y.flatten_all()?.narrow(0, 0, 16)?.to_vec1()?;
//! assert!(g0.iter().sum::<f32>().abs() < 1e-4);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{ensure, Result};
use candle_core::{Tensor, Var, D};

use super::fused::silu;
use crate::zoo::attention::{attend_heads, export_heads};
use crate::zoo::diffusion::Silu;
use crate::zoo::layers::{export_tensor, Linear, Params, ZooLayer};
use crate::zoo::onnx_builder::{attr_float, attr_int, attr_ints, attr_string, GraphBuilder};
use crate::zoo::vae::Conv2d;

/// Epsilon of every group norm.
pub const GROUP_NORM_EPS: f32 = 1e-5;

/// Group normalisation over `[n, C, H, W]` (statistics per sample and group of `C / G`
/// channels, then a per-channel affine map). Exported as one ONNX `GroupNormalization` with
/// per-channel scale and bias, which is the opset-21 form: the graph must be written with
/// [`GraphBuilder::finish_with_opset`]`(21)` ([`super::UNet::export`] does).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    name: String,
    groups: usize,
    gamma: Var,
    beta: Var,
    eps: f32,
}

impl GroupNorm {
    /// `groups` groups over `channels` channels (which it must divide); γ = 1, β = 0.
    pub fn new(p: &mut Params, name: &str, channels: usize, groups: usize) -> Result<Self> {
        ensure!(groups > 0 && channels.is_multiple_of(groups), "{name}: {channels} channels in {groups} groups");
        Ok(Self {
            name: name.into(),
            groups,
            gamma: p.constant(&format!("{name}.gamma"), &[channels], 1.0)?,
            beta: p.constant(&format!("{name}.beta"), &[channels], 0.0)?,
            eps: GROUP_NORM_EPS,
        })
    }
}

impl ZooLayer for GroupNorm {
    /// The fused kernel [`super::fused::group_norm`].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        super::fused::group_norm(x, self.gamma.as_tensor(), self.beta.as_tensor(), self.groups, self.eps)
    }

    /// `GroupNormalization(x, γ [C], β [C])` with `num_groups` and `epsilon`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let gamma = export_tensor(g, &format!("{}.gamma", self.name), &self.gamma)?;
        let beta = export_tensor(g, &format!("{}.beta", self.name), &self.beta)?;
        g.push_scope(&self.name);
        let attrs = vec![attr_int("num_groups", self.groups as i64), attr_float("epsilon", self.eps)];
        let y = g.op("GroupNormalization", &[input, &gamma, &beta], attrs);
        g.pop_scope();
        Ok(y)
    }
}

/// Multiplies parameter `name` of `p` by `factor` (e.g. to start a residual branch near zero).
pub fn scale_param(p: &Params, name: &str, factor: f64) -> Result<()> {
    let param = p.all().iter().find(|q| q.name == name);
    let Some(param) = param else { anyhow::bail!("no parameter {name}") };
    param.var.set(&(param.var.as_tensor() * factor)?)?;
    Ok(())
}

/// A convolution with bias: [`Conv2d`] (He-initialised; its export, `Conv`) trained through
/// [`super::im2col::conv2d`] (one GEMM forward, GEMMs and a col2im backward).
#[derive(Clone, Debug)]
pub struct Conv {
    inner: Conv2d,
    weight: Var,
    bias: Var,
    stride: usize,
    pad: usize,
}

impl Conv {
    /// A `k×k` convolution `c_in → c_out` with `stride` and symmetric `pad`.
    pub fn new(
        p: &mut Params,
        name: &str,
        (c_in, c_out): (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let inner = Conv2d::new(p, name, c_in, c_out, k, stride, pad)?;
        let var = |suffix: &str| -> Result<Var> {
            let full = format!("{name}.{suffix}");
            let found = p.all().iter().find(|q| q.name == full).map(|q| q.var.clone());
            found.ok_or_else(|| anyhow::anyhow!("{full} was not created"))
        };
        Ok(Self { inner, weight: var("weight")?, bias: var("bias")?, stride, pad })
    }
}

impl ZooLayer for Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        super::im2col::conv2d(x, self.weight.as_tensor(), self.bias.as_tensor(), self.stride, self.pad)
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        self.inner.export(g, input)
    }
}

/// A 3×3 convolution (stride 1 or 2, padding 1) with He initialisation.
pub fn conv3(p: &mut Params, name: &str, c_in: usize, c_out: usize, stride: usize) -> Result<Conv> {
    Conv::new(p, name, (c_in, c_out), 3, stride, 1)
}

/// Residual block: `h = Conv₁(SiLU(GN₁(x))) + P·e`, `out = skip(x) + Conv₂(SiLU(GN₂(h)))`,
/// where `e` is the (already SiLU-activated) time and class embedding `[n, E]`, `P·e` is added
/// per channel, and `skip` is a 1×1 convolution when the width changes (else the identity).
/// `Conv₂` starts at a tenth of its He scale, so a fresh block is close to `skip`.
#[derive(Clone, Debug)]
pub struct ResBlock {
    name: String,
    norm1: GroupNorm,
    conv1: Conv,
    emb: Linear,
    norm2: GroupNorm,
    conv2: Conv,
    skip: Option<Conv>,
    c_out: usize,
}

impl ResBlock {
    /// `c_in → c_out` channels, group norms of `groups` groups, embedding width `emb`.
    pub fn new(p: &mut Params, name: &str, c_in: usize, c_out: usize, emb: usize, groups: usize) -> Result<Self> {
        let norm1 = GroupNorm::new(p, &format!("{name}.norm1"), c_in, groups)?;
        let conv1 = conv3(p, &format!("{name}.conv1"), c_in, c_out, 1)?;
        let emb = Linear::new(p, &format!("{name}.emb"), emb, c_out, (1.0 / emb as f64).sqrt())?;
        let norm2 = GroupNorm::new(p, &format!("{name}.norm2"), c_out, groups)?;
        let conv2 = conv3(p, &format!("{name}.conv2"), c_out, c_out, 1)?;
        scale_param(p, &format!("{name}.conv2.weight"), 0.1)?;
        let skip =
            if c_in == c_out { None } else { Some(Conv::new(p, &format!("{name}.skip"), (c_in, c_out), 1, 1, 0)?) };
        Ok(Self { name: name.into(), norm1, conv1, emb, norm2, conv2, skip, c_out })
    }

    /// The block on `x [n, c_in, H, W]` with the activated embedding `e [n, E]`.
    pub fn forward(&self, x: &Tensor, e: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let proj = self.emb.forward(e)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&proj)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let s = match &self.skip {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        s + h
    }

    /// ONNX of [`ResBlock::forward`]; `e` is the activated embedding value.
    pub fn export(&self, g: &mut GraphBuilder, x: &str, e: &str) -> Result<String> {
        let h = self.norm1.export(g, x)?;
        let h = Silu.export(g, &h)?;
        let h = self.conv1.export(g, &h)?;
        let proj = self.emb.export(g, e)?;
        g.push_scope(&self.name);
        let axes = g.const_i64_vec(&[2, 3]);
        let proj = g.op("Unsqueeze", &[&proj, &axes], vec![]);
        let h = g.op("Add", &[&h, &proj], vec![]);
        g.pop_scope();
        let h = self.norm2.export(g, &h)?;
        let h = Silu.export(g, &h)?;
        let h = self.conv2.export(g, &h)?;
        let s = match &self.skip {
            Some(c) => c.export(g, x)?,
            None => x.to_string(),
        };
        g.push_scope(&self.name);
        let y = g.op("Add", &[&s, &h], vec![]);
        g.pop_scope();
        Ok(y)
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.c_out
    }
}

/// Softmax over the last axis from differentiable primitives (the row maximum is subtracted
/// as a constant, which leaves the value and the gradient unchanged).
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Multi-head self-attention over the pixels of `[n, C, H, W]` with a residual connection:
/// `x + O·Attn(Q, K, V)` of the group-normalised tokens `[n, H·W, C]`. The export spells out
/// the pattern that the converter fuses into its streaming `Attention` op (projections,
/// `Reshape [n, S, heads, dh]`, K transposed with perm `[0, 2, 3, 1]`, scale by `Mul`,
/// `Softmax`, `MatMul`).
#[derive(Clone, Debug)]
pub struct SelfAttention2d {
    name: String,
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    channels: usize,
}

impl SelfAttention2d {
    /// `heads` heads over `channels` (which they must divide).
    pub fn new(p: &mut Params, name: &str, channels: usize, heads: usize, groups: usize) -> Result<Self> {
        ensure!(heads > 0 && channels.is_multiple_of(heads), "{name}: {channels} channels in {heads} heads");
        let std = (1.0 / channels as f64).sqrt();
        Ok(Self {
            name: name.into(),
            norm: GroupNorm::new(p, &format!("{name}.norm"), channels, groups)?,
            q: Linear::new(p, &format!("{name}.q"), channels, channels, std)?,
            k: Linear::new(p, &format!("{name}.k"), channels, channels, std)?,
            v: Linear::new(p, &format!("{name}.v"), channels, channels, std)?,
            o: Linear::new(p, &format!("{name}.o"), channels, channels, 0.1 * std)?,
            heads,
            channels,
        })
    }

    fn head_dim(&self) -> usize {
        self.channels / self.heads
    }
}

impl ZooLayer for SelfAttention2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let tokens = self.norm.forward(x)?.reshape((n, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let (q, k, v) = (self.q.forward(&tokens)?, self.k.forward(&tokens)?, self.v.forward(&tokens)?);
        let y = attend_heads(&q, &k, &v, self.heads, true, &[], softmax_last)?;
        let y = self.o.forward(&y)?.transpose(1, 2)?.contiguous()?.reshape((n, c, h, w))?;
        x + y
    }

    /// Needs the spatial size: use [`SelfAttention2d::export_at`].
    fn export(&self, _g: &mut GraphBuilder, _input: &str) -> Result<String> {
        anyhow::bail!("{}: export with export_at (the attention needs the feature map's H×W)", self.name)
    }
}

impl SelfAttention2d {
    /// ONNX of the block on `input [n, C, h, w]`.
    pub fn export_at(&self, g: &mut GraphBuilder, input: &str, h: usize, w: usize) -> Result<String> {
        let (c, s, nh, dh) = (self.channels as i64, (h * w) as i64, self.heads as i64, self.head_dim() as i64);
        let normed = self.norm.export(g, input)?;
        g.push_scope(&self.name);
        let flat = g.const_i64_vec(&[-1, c, s]);
        let tokens = g.op("Reshape", &[&normed, &flat], vec![]);
        let tokens = g.op("Transpose", &[&tokens], vec![attr_ints("perm", &[0, 2, 1])]);
        g.pop_scope();
        let q = self.q.export(g, &tokens)?;
        let k = self.k.export(g, &tokens)?;
        let v = self.v.export(g, &tokens)?;
        g.push_scope(&self.name);
        let y = export_heads(g, (&q, &k, &v), [-1, s, nh, dh], [-1, s, c], true, &[]);
        g.pop_scope();
        let y = self.o.export(g, &y)?;
        g.push_scope(&self.name);
        let y = g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1])]);
        let image = g.const_i64_vec(&[-1, c, h as i64, w as i64]);
        let y = g.op("Reshape", &[&y, &image], vec![]);
        let out = g.op("Add", &[input, &y], vec![]);
        g.pop_scope();
        Ok(out)
    }
}

/// Nearest-neighbour ×2 upsampling of `[n, C, H, W]` ([`super::im2col::upsample2x`], whose
/// backward adds to the input's gradient; candle's `upsample_nearest2d` backward overwrites
/// it).
pub fn upsample2x(x: &Tensor) -> candle_core::Result<Tensor> {
    super::im2col::upsample2x(x)
}

/// ONNX of [`upsample2x`]: `Resize` with scales `[1, 1, 2, 2]`, nearest, `asymmetric` + `floor`
/// (PyTorch's `F.interpolate(scale_factor=2, mode="nearest")`).
pub fn export_upsample2x(g: &mut GraphBuilder, input: &str) -> String {
    let scales = g.initializer_f32(&format!("{input}.up_scales"), &[4], &[1.0, 1.0, 2.0, 2.0]);
    let attrs = vec![
        attr_string("mode", "nearest"),
        attr_string("coordinate_transformation_mode", "asymmetric"),
        attr_string("nearest_mode", "floor"),
    ];
    g.op("Resize", &[input, "", &scales], attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn upsample_repeats_pixels_and_sums_gradients() -> Result<()> {
        let x = Var::from_tensor(&Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 2, 2, 2))?)?;
        let y = upsample2x(x.as_tensor())?;
        assert_eq!(y.dims(), &[1, 2, 4, 4]);
        let row: Vec<f32> = y.flatten_all()?.narrow(0, 0, 8)?.to_vec1()?;
        assert_eq!(row, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // x is used twice: by the upsample and directly; both gradients must arrive.
        let loss = (y.sum_all()? + x.as_tensor().sum_all()?)?;
        let g = loss.backward()?;
        let gx: Vec<f32> = g.get(x.as_tensor()).expect("grad").flatten_all()?.to_vec1()?;
        assert!(gx.iter().all(|&v| v == 5.0), "{gx:?}");
        Ok(())
    }

    #[test]
    fn softmax_rows_sum_to_one() -> Result<()> {
        let x = Tensor::new(&[[1f32, 2.0, 3.0], [-50.0, 0.0, 50.0]], &Device::Cpu)?;
        let y: Vec<Vec<f32>> = softmax_last(&x)?.to_vec2()?;
        for r in y {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        Ok(())
    }
}
