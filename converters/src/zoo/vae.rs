//! A convolutional variational auto-encoder (Kingma & Welling, 2014) on procedural 16×16
//! glyphs ([`glyphs`]).
//!
//! - Encoder `q(z | x)`: `x [n,1,16,16]` → Conv 4×4/2 (1 → c1, 8×8) → ReLU → Conv 4×4/2
//!   (c1 → c2, 4×4) → ReLU → Flatten → two dense heads `μ [n,L]` and `log σ² [n,L]`.
//! - Decoder `p(x | z)`: `z [n,L]` → dense `L → c2·16` → ReLU → Reshape `[n,c2,4,4]` →
//!   ConvTranspose 4×4/2 (c2 → c1, 8×8) → ReLU → ConvTranspose 4×4/2 (c1 → 1, 16×16) → logits;
//!   the exported graph ends in `Sigmoid` (the Bernoulli means, i.e. the image).
//! - Likelihood: per-pixel Bernoulli on the grey levels (binary cross-entropy with the pixel
//!   value as the target, as in the usual MNIST VAEs); prior `N(0, I)`; the ELBO is
//!   `E_q[log p(x|z)] − KL(q(z|x) ‖ N(0, I))` with one reparameterised sample `z = μ + σ ε`.
//!
//! candle 0.11 has a backward pass for `conv_transpose2d` (checked against finite differences
//! in this module's tests), so the decoder uses transposed convolutions as a PyTorch DCGAN does.
//!
//! Both halves are exported as separate ONNX graphs ([`Vae::export_decoder`],
//! [`Vae::export_encoder`]) that become the entries `forward` (decode: sampling on a device
//! feeds N(0, 1) latents) and `encode` of one `.mote`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::vae::{Vae, VaeConfig};
//! let vae = Vae::new(VaeConfig::default(), 0)?;
//! let x = Tensor::zeros((2, 1, 16, 16), candle_core::DType::F32, &Device::Cpu)?;
//! let (mu, logvar) = vae.encode(&x)?;
//! assert_eq!(mu.dims(), &[2, 16]);
//! let logits = vae.decode_logits(&mu)?;
//! assert_eq!(logits.dims(), &[2, 1, 16, 16]);
//! # let _ = logvar;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod glyphs;
pub mod train;

pub use card::write_vae_card;
pub use train::{train_vae, VaeReport, VaeTrainOptions};

use anyhow::Result;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::layers::{export_tensor, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, attr_ints, DataType, Dim, GraphBuilder};

/// Side of the square images.
pub const SIDE: usize = 16;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct VaeConfig {
    /// Latent dimension `L`.
    pub latent: usize,
    /// Channels after the first (8×8) and before the last convolution.
    pub c1: usize,
    /// Channels at the 4×4 bottleneck.
    pub c2: usize,
    /// Batch bound `n` of the exported graphs (the converter's `--dim n=…`).
    pub max_batch: usize,
}

impl Default for VaeConfig {
    /// The zoo model: latent 16, channels 16 and 32, exported for batches of up to 8 images.
    fn default() -> Self {
        Self { latent: 16, c1: 16, c2: 32, max_batch: 8 }
    }
}

/// A 2-D convolution `[c_out, c_in, k, k]` with bias, square stride and padding.
#[derive(Clone, Debug)]
pub struct Conv2d {
    name: String,
    weight: Var,
    bias: Var,
    stride: usize,
    pad: usize,
}

impl Conv2d {
    /// He-initialised weights, zero bias.
    pub fn new(
        p: &mut Params,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let std = (2.0 / (c_in * k * k) as f64).sqrt();
        let weight = p.normal(&format!("{name}.weight"), &[c_out, c_in, k, k], std, true)?;
        let bias = p.constant(&format!("{name}.bias"), &[c_out], 0.0)?;
        Ok(Self { name: name.into(), weight, bias, stride, pad })
    }
}

impl ZooLayer for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv2d(self.weight.as_tensor(), self.pad, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.as_tensor().reshape((1, (), 1, 1))?)
    }

    /// `Conv(x, W, b)` with `strides` and symmetric `pads`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let w = export_tensor(g, &format!("{}.weight", self.name), &self.weight)?;
        let b = export_tensor(g, &format!("{}.bias", self.name), &self.bias)?;
        let k = self.weight.dim(2)? as i64;
        let (s, p) = (self.stride as i64, self.pad as i64);
        g.push_scope(&self.name);
        let attrs =
            vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[s, s]), attr_ints("pads", &[p, p, p, p])];
        let y = g.op("Conv", &[input, &w, &b], attrs);
        g.pop_scope();
        Ok(y)
    }
}

/// A transposed 2-D convolution `[c_in, c_out, k, k]` (ONNX / PyTorch layout) with bias.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    name: String,
    weight: Var,
    bias: Var,
    stride: usize,
    pad: usize,
}

impl ConvTranspose2d {
    /// Normal(0, `std`) weights, zero bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        std: f64,
    ) -> Result<Self> {
        let weight = p.normal(&format!("{name}.weight"), &[c_in, c_out, k, k], std, true)?;
        let bias = p.constant(&format!("{name}.bias"), &[c_out], 0.0)?;
        Ok(Self { name: name.into(), weight, bias, stride, pad })
    }
}

impl ZooLayer for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv_transpose2d(self.weight.as_tensor(), self.pad, 0, self.stride, 1)?;
        y.broadcast_add(&self.bias.as_tensor().reshape((1, (), 1, 1))?)
    }

    /// `ConvTranspose(x, W, b)` with `strides` and symmetric `pads`.
    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let w = export_tensor(g, &format!("{}.weight", self.name), &self.weight)?;
        let b = export_tensor(g, &format!("{}.bias", self.name), &self.bias)?;
        let k = self.weight.dim(2)? as i64;
        let (s, p) = (self.stride as i64, self.pad as i64);
        g.push_scope(&self.name);
        let attrs =
            vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[s, s]), attr_ints("pads", &[p, p, p, p])];
        let y = g.op("ConvTranspose", &[input, &w, &b], attrs);
        g.pop_scope();
        Ok(y)
    }
}

/// The convolutional VAE.
#[derive(Debug)]
pub struct Vae {
    cfg: VaeConfig,
    params: Params,
    enc1: Conv2d,
    enc2: Conv2d,
    mu: Linear,
    logvar: Linear,
    dec_fc: Linear,
    dec1: ConvTranspose2d,
    dec2: ConvTranspose2d,
}

/// Per-image terms of the ELBO (nats), each `[n]`.
pub struct ElboTerms {
    /// `−log p(x | z)` for the sampled `z` (binary cross-entropy summed over pixels).
    pub reconstruction: Tensor,
    /// `KL(q(z | x) ‖ N(0, I))`, analytic.
    pub kl: Tensor,
}

impl Vae {
    /// A VAE with fresh weights drawn from `seed`; the log-variance head starts at zero output
    /// (σ = 1) and small, so early training is stable.
    pub fn new(cfg: VaeConfig, seed: u64) -> Result<Self> {
        let mut p = Params::new(seed);
        let (l, c1, c2) = (cfg.latent, cfg.c1, cfg.c2);
        let flat = c2 * 16;
        let enc1 = Conv2d::new(&mut p, "enc.conv1", 1, c1, 4, 2, 1)?;
        let enc2 = Conv2d::new(&mut p, "enc.conv2", c1, c2, 4, 2, 1)?;
        let mu = Linear::new(&mut p, "enc.mu", flat, l, (1.0 / flat as f64).sqrt())?;
        let logvar = Linear::new(&mut p, "enc.logvar", flat, l, 1e-3)?;
        let dec_fc = Linear::new(&mut p, "dec.fc", l, flat, (2.0 / l as f64).sqrt())?;
        let dec1 = ConvTranspose2d::new(&mut p, "dec.up1", c2, c1, 4, 2, 1, (2.0 / (c2 * 4) as f64).sqrt())?;
        let dec2 = ConvTranspose2d::new(&mut p, "dec.up2", c1, 1, 4, 2, 1, (1.0 / (c1 * 4) as f64).sqrt())?;
        Ok(Self { cfg, params: p, enc1, enc2, mu, logvar, dec_fc, dec1, dec2 })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Mutable parameters (e.g. to randomise them in export tests).
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// `q(z | x)`: `(μ, log σ²)`, each `[n, L]`, of images `x [n, 1, 16, 16]`.
    pub fn encode(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.enc1.forward(x)?.relu()?;
        let h = self.enc2.forward(&h)?.relu()?;
        let h = h.flatten_from(1)?;
        Ok((self.mu.forward(&h)?, self.logvar.forward(&h)?))
    }

    /// Decoder logits `[n, 1, 16, 16]` of latents `z [n, L]` (the image is their sigmoid).
    pub fn decode_logits(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let n = z.dim(0)?;
        let h = self.dec_fc.forward(z)?.relu()?.reshape((n, self.cfg.c2, 4, 4))?;
        let h = self.dec1.forward(&h)?.relu()?;
        self.dec2.forward(&h)
    }

    /// Decoded images (Bernoulli means) `[n, 1, 16, 16]`.
    pub fn decode(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::sigmoid(&self.decode_logits(z)?)
    }

    /// The ELBO terms of images `x` with the reparameterisation noise `eps [n, L]`.
    pub fn elbo_terms(&self, x: &Tensor, eps: &Tensor) -> candle_core::Result<ElboTerms> {
        let (mu, logvar) = self.encode(x)?;
        let z = (&mu + eps.mul(&(&logvar * 0.5)?.exp()?)?)?;
        let logits = self.decode_logits(&z)?;
        let reconstruction = bce_with_logits(&logits, x)?.flatten_from(1)?.sum(1)?;
        // KL = ½ Σ (μ² + σ² − 1 − log σ²).
        let kl = (((mu.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?.sum(1)?;
        Ok(ElboTerms { reconstruction, kl: (kl * 0.5)? })
    }

    fn graph(&self, name: &str) -> GraphBuilder {
        let mut g = GraphBuilder::new(&format!("vae_{name}"));
        g.metadata("mote.family", "vae");
        g.metadata("mote.vae_part", name);
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata("mote.latent", &self.cfg.latent.to_string());
        g
    }

    /// ONNX of the decoder: input `z [n, L]`, output `image [n, 1, 16, 16]` (sigmoid means).
    pub fn export_decoder(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("decoder");
        let n = || Dim::Param("n".into());
        let z = g.input("z", DataType::Float, &[n(), Dim::Fixed(self.cfg.latent as i64)]);
        let h = self.dec_fc.export(&mut g, &z)?;
        let h = g.op("Relu", &[&h], vec![]);
        let shape = g.const_i64_vec(&[-1, self.cfg.c2 as i64, 4, 4]);
        let h = g.op("Reshape", &[&h, &shape], vec![]);
        let h = self.dec1.export(&mut g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.dec2.export(&mut g, &h)?;
        let y = g.op_named("Sigmoid", &[&h], vec![], "image");
        let side = Dim::Fixed(SIDE as i64);
        g.output(&y, DataType::Float, &[n(), Dim::Fixed(1), side.clone(), side]);
        Ok(g.finish())
    }

    /// ONNX of the encoder: input `image [n, 1, 16, 16]`, outputs `mu [n, L]` and
    /// `logvar [n, L]`.
    pub fn export_encoder(&self) -> Result<Vec<u8>> {
        let mut g = self.graph("encoder");
        let n = || Dim::Param("n".into());
        let side = || Dim::Fixed(SIDE as i64);
        let x = g.input("image", DataType::Float, &[n(), Dim::Fixed(1), side(), side()]);
        let h = self.enc1.export(&mut g, &x)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.enc2.export(&mut g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = g.op("Flatten", &[&h], vec![attr_int("axis", 1)]);
        let mu = self.mu.export_as(&mut g, &h, Some("mu"))?;
        let logvar = self.logvar.export_as(&mut g, &h, Some("logvar"))?;
        let l = Dim::Fixed(self.cfg.latent as i64);
        g.output(&mu, DataType::Float, &[n(), l.clone()]);
        g.output(&logvar, DataType::Float, &[n(), l]);
        Ok(g.finish())
    }
}

/// Elementwise binary cross-entropy `softplus(l) − x·l`, computed stably as
/// `max(l, 0) − x·l + log(1 + exp(−|l|))`.
pub fn bce_with_logits(logits: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - logits.mul(x)?)? + soft
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::layers::tensor_data;
    use crate::zoo::rng::SplitMix64;
    use candle_core::Device;
    use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue};

    fn run_tract(onnx: &[u8], shape: &[usize], data: &[f32]) -> Vec<Vec<f32>> {
        let plan = tract_onnx::onnx().model_for_read(&mut &onnx[..]).unwrap().into_optimized().unwrap();
        let plan = plan.into_runnable().unwrap();
        let t = tract_onnx::prelude::Tensor::from_shape(shape, data).unwrap();
        let out = plan.run(tvec!(t.into_tvalue())).unwrap();
        out.iter().map(|o| o.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect()
    }

    #[test]
    fn conv_transpose2d_backward_matches_finite_differences() -> Result<()> {
        // The decoder relies on candle's conv_transpose2d gradient (unlike conv_transpose1d, it
        // exists in candle 0.11): compare it with central differences of a scalar loss.
        let dev = Device::Cpu;
        let mut r = SplitMix64::new(3);
        let x = Var::from_vec(r.normal_vec(2 * 3 * 3 * 3, 1.0), (2, 3, 3, 3), &dev)?;
        let w = Var::from_vec(r.normal_vec(3 * 2 * 4 * 4, 0.5), (3, 2, 4, 4), &dev)?;
        let target = Tensor::from_vec(r.normal_vec(2 * 2 * 6 * 6, 1.0), (2, 2, 6, 6), &dev)?;
        let loss = |x: &Tensor, w: &Tensor| -> candle_core::Result<Tensor> {
            x.conv_transpose2d(w, 1, 0, 2, 1)?.mul(&target)?.tanh()?.sum_all()
        };
        let grads = loss(x.as_tensor(), w.as_tensor())?.backward()?;
        for v in [&x, &w] {
            let g = tensor_data(grads.get(v.as_tensor()).expect("gradient"))?;
            let base = tensor_data(v.as_tensor())?;
            for i in (0..base.len()).step_by(5) {
                let eps = 1e-2f32;
                let mut hi = base.clone();
                hi[i] += eps;
                let mut lo = base.clone();
                lo[i] -= eps;
                let at = |d: Vec<f32>| -> Result<f32> {
                    let t = Tensor::from_vec(d, v.shape(), &dev)?;
                    let l = if std::ptr::eq(v, &x) { loss(&t, w.as_tensor())? } else { loss(x.as_tensor(), &t)? };
                    Ok(l.to_scalar::<f32>()?)
                };
                let fd = (at(hi)? - at(lo)?) / (2.0 * eps);
                assert!((fd - g[i]).abs() < 2e-2 * (1.0 + fd.abs()), "grad[{i}] {} vs finite difference {fd}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn onnx_exports_match_candle() -> Result<()> {
        let mut vae = Vae::new(VaeConfig { latent: 4, c1: 4, c2: 8, max_batch: 3 }, 5)?;
        vae.params_mut().randomize(0.3)?;
        let mut r = SplitMix64::new(9);
        let img: Vec<f32> = (0..3 * PIXELS).map(|_| r.unit_f64() as f32).collect();
        let x = Tensor::from_vec(img.clone(), (3, 1, SIDE, SIDE), &Device::Cpu)?;
        let (mu, logvar) = vae.encode(&x)?;
        let out = run_tract(&vae.export_encoder()?, &[3, 1, SIDE, SIDE], &img);
        for (want, got) in [(tensor_data(&mu)?, &out[0]), (tensor_data(&logvar)?, &out[1])] {
            assert!(want.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-4), "{want:?} vs {got:?}");
        }
        let z = r.normal_vec(3 * 4, 1.0);
        let want = tensor_data(&vae.decode(&Tensor::from_vec(z.clone(), (3, 4), &Device::Cpu)?)?)?;
        let got = run_tract(&vae.export_decoder()?, &[3, 4], &z).remove(0);
        assert_eq!(got.len(), 3 * PIXELS);
        assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-5));
        Ok(())
    }

    #[test]
    fn bce_matches_the_direct_formula() -> Result<()> {
        let l = Tensor::new(&[-30.0f32, -1.0, 0.0, 2.5, 30.0], &Device::Cpu)?;
        let x = Tensor::new(&[0.0f32, 0.3, 1.0, 0.9, 1.0], &Device::Cpu)?;
        let got = tensor_data(&bce_with_logits(&l, &x)?)?;
        for ((&l, &x), g) in [-30.0f64, -1.0, 0.0, 2.5, 30.0].iter().zip(&[0.0f64, 0.3, 1.0, 0.9, 1.0]).zip(got) {
            let p = 1.0 / (1.0 + (-l).exp());
            let want = -(x * p.max(1e-300).ln() + (1.0 - x) * (1.0 - p).max(1e-300).ln());
            assert!((want - g as f64).abs() < 1e-4 * (1.0 + want), "{l}: {want} vs {g}");
        }
        Ok(())
    }
}
