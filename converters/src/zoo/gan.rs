//! A DCGAN-style generative adversarial network (Radford et al., 2016) on the procedural
//! 16×16 glyphs of [`crate::zoo::vae::glyphs`].
//!
//! - Generator `G(z)`: `z [n,L]` → Linear `L → c2·16` → ReLU → Reshape `[n,c2,4,4]` →
//!   ConvTranspose 4×4/2 (c2 → c2, 8×8) → BatchNorm → ReLU → ConvTranspose 4×4/2 (c2 → c1,
//!   16×16) → BatchNorm → ReLU → Conv 3×3 pad 1 (c1 → 1) → Sigmoid.
//! - Discriminator (training only): Conv 4×4/2 (1 → c1) → LeakyReLU 0.2 → Conv 4×4/2 (c1 → c2)
//!   → LeakyReLU 0.2 → Linear `c2·16 → 1` (a logit).
//! - Loss: the non-saturating GAN loss (binary cross-entropy on the logits), Adam β₁ = 0.5.
//!
//! Batch-norm trains on batch statistics; after training its statistics are re-estimated over
//! many generator batches (population mean and variance), and the generator is exported with
//! inference-form `BatchNormalization` nodes, which the converter folds into the transposed
//! convolution before each.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::gan::{Gan, GanConfig};
//! let gan = Gan::new(GanConfig::default(), 0)?;
//! let z = Tensor::zeros((2, 16), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(gan.generate(&z, false)?.dims(), &[2, 1, 16, 16]);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use super::layers::{export_tensor, tensor_data, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_float, DataType, Dim, GraphBuilder};
use super::rng::SplitMix64;
use super::vae::glyphs::{glyphs, grid_png, independent_pixels, mean_image, uniform_noise};
use super::vae::train::{energies, gaussians, BASELINE_SEED, FLOOR_SEED, LATENT_SEED, TEST_SEED, TRAIN_SEED};
use super::vae::{bce_with_logits, Conv2d, ConvTranspose2d, PIXELS, SIDE};
use crate::array::Array;

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct GanConfig {
    /// Latent dimension `L`.
    pub latent: usize,
    /// Channels at 16×16 (generator) / 8×8 (discriminator).
    pub c1: usize,
    /// Channels at 4×4 and 8×8 (generator) / 4×4 (discriminator).
    pub c2: usize,
    /// Batch bound `n` of the exported generator.
    pub max_batch: usize,
}

impl Default for GanConfig {
    /// The zoo model: latent 16, channels 8 and 16, exported for batches of up to 8.
    fn default() -> Self {
        Self { latent: 16, c1: 8, c2: 16, max_batch: 8 }
    }
}

/// Batch normalisation over the channels of `[n, c, h, w]`: batch statistics in training
/// (tracked in running averages), the stored statistics at inference.
#[derive(Debug)]
pub struct BatchNorm2d {
    name: String,
    gamma: Var,
    beta: Var,
    /// (running mean, running variance), each `[c]`.
    stats: Mutex<(Tensor, Tensor)>,
    eps: f64,
}

impl BatchNorm2d {
    /// γ = 1, β = 0, running mean 0 and variance 1.
    pub fn new(p: &mut Params, name: &str, c: usize) -> Result<Self> {
        let gamma = p.constant(&format!("{name}.gamma"), &[c], 1.0)?;
        let beta = p.constant(&format!("{name}.beta"), &[c], 0.0)?;
        let dev = p.device().clone();
        let stats = Mutex::new((
            Tensor::zeros(c, candle_core::DType::F32, &dev)?,
            Tensor::ones(c, candle_core::DType::F32, &dev)?,
        ));
        Ok(Self { name: name.into(), gamma, beta, stats, eps: 1e-5 })
    }

    /// Batch mean and (biased) variance per channel of `x`, each `[c]`.
    fn batch_stats(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let c = x.dim(1)?;
        let flat = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
        let mean = flat.mean(D::Minus1)?;
        let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(D::Minus1)?;
        Ok((mean, var))
    }

    /// Normalises with batch statistics (`train`, updating the running averages with momentum
    /// 0.1) or with the stored ones.
    pub fn forward_mode(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (mean, var) = if train {
            let (m, v) = Self::batch_stats(x)?;
            let mut s = self.stats.lock().expect("batch-norm statistics");
            s.0 = ((&s.0 * 0.9)? + (m.detach() * 0.1)?)?;
            s.1 = ((&s.1 * 0.9)? + (v.detach() * 0.1)?)?;
            (m, v)
        } else {
            let s = self.stats.lock().expect("batch-norm statistics");
            (s.0.clone(), s.1.clone())
        };
        let shape = (1, (), 1, 1);
        let scale = (self.gamma.as_tensor() / (var + self.eps)?.sqrt()?)?.reshape(shape)?;
        let xn = x.broadcast_sub(&mean.reshape(shape)?)?.broadcast_mul(&scale)?;
        xn.broadcast_add(&self.beta.as_tensor().reshape(shape)?)
    }

    /// Sets the stored statistics.
    pub fn set_stats(&self, mean: Tensor, var: Tensor) {
        *self.stats.lock().expect("batch-norm statistics") = (mean, var);
    }

    /// ONNX `BatchNormalization` (inference form) with the stored statistics.
    pub fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let (mean, var) = self.stats.lock().expect("batch-norm statistics").clone();
        let gamma = export_tensor(g, &format!("{}.gamma", self.name), &self.gamma)?;
        let beta = export_tensor(g, &format!("{}.beta", self.name), &self.beta)?;
        let mean = export_tensor(g, &format!("{}.running_mean", self.name), &mean)?;
        let var = export_tensor(g, &format!("{}.running_var", self.name), &var)?;
        g.push_scope(&self.name);
        let y = g.op(
            "BatchNormalization",
            &[input, &gamma, &beta, &mean, &var],
            vec![attr_float("epsilon", self.eps as f32)],
        );
        g.pop_scope();
        Ok(y)
    }
}

/// Generator and discriminator.
#[derive(Debug)]
pub struct Gan {
    cfg: GanConfig,
    gen_params: Params,
    disc_params: Params,
    g_fc: Linear,
    g_up1: ConvTranspose2d,
    g_bn1: BatchNorm2d,
    g_up2: ConvTranspose2d,
    g_bn2: BatchNorm2d,
    g_out: Conv2d,
    d_conv1: Conv2d,
    d_conv2: Conv2d,
    d_fc: Linear,
}

impl Gan {
    /// Fresh weights drawn from `seed` (DCGAN's N(0, 0.02) is replaced by He-style scales,
    /// which train faster at this size).
    pub fn new(cfg: GanConfig, seed: u64) -> Result<Self> {
        let (l, c1, c2) = (cfg.latent, cfg.c1, cfg.c2);
        let mut gp = Params::new(seed);
        let g_fc = Linear::new(&mut gp, "gen.fc", l, c2 * 16, (2.0 / l as f64).sqrt())?;
        let g_up1 = ConvTranspose2d::new(&mut gp, "gen.up1", c2, c2, 4, 2, 1, (2.0 / (c2 * 4) as f64).sqrt())?;
        let g_bn1 = BatchNorm2d::new(&mut gp, "gen.bn1", c2)?;
        let g_up2 = ConvTranspose2d::new(&mut gp, "gen.up2", c2, c1, 4, 2, 1, (2.0 / (c2 * 4) as f64).sqrt())?;
        let g_bn2 = BatchNorm2d::new(&mut gp, "gen.bn2", c1)?;
        let g_out = Conv2d::new(&mut gp, "gen.out", c1, 1, 3, 1, 1)?;
        let mut dp = Params::new(seed ^ 0xd15c);
        let d_conv1 = Conv2d::new(&mut dp, "disc.conv1", 1, c1, 4, 2, 1)?;
        let d_conv2 = Conv2d::new(&mut dp, "disc.conv2", c1, c2, 4, 2, 1)?;
        let d_fc = Linear::new(&mut dp, "disc.fc", c2 * 16, 1, (1.0 / (c2 * 16) as f64).sqrt())?;
        Ok(Self {
            cfg,
            gen_params: gp,
            disc_params: dp,
            g_fc,
            g_up1,
            g_bn1,
            g_up2,
            g_bn2,
            g_out,
            d_conv1,
            d_conv2,
            d_fc,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &GanConfig {
        &self.cfg
    }

    /// The generator's parameters.
    pub fn generator_params(&self) -> &Params {
        &self.gen_params
    }

    /// Generator logits `[n, 1, 16, 16]` (batch statistics when `train`).
    fn generate_logits(&self, z: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let n = z.dim(0)?;
        let h = self.g_fc.forward(z)?.relu()?.reshape((n, self.cfg.c2, 4, 4))?;
        let h = self.g_bn1.forward_mode(&self.g_up1.forward(&h)?, train)?.relu()?;
        let h = self.g_bn2.forward_mode(&self.g_up2.forward(&h)?, train)?.relu()?;
        self.g_out.forward(&h)
    }

    /// Generated images `[n, 1, 16, 16]` in [0, 1].
    pub fn generate(&self, z: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        candle_nn::ops::sigmoid(&self.generate_logits(z, train)?)
    }

    /// Discriminator logits `[n, 1]`.
    pub fn discriminate(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let lrelu = |t: Tensor| -> candle_core::Result<Tensor> { t.maximum(&(&t * 0.2)?) };
        let h = lrelu(self.d_conv1.forward(x)?)?;
        let h = lrelu(self.d_conv2.forward(&h)?)?;
        self.d_fc.forward(&h.flatten_from(1)?)
    }

    /// Re-estimates the batch-norm statistics as the average batch mean and variance over
    /// `batches` generator batches of `size` latents from `seed` (no parameter changes).
    pub fn recalibrate(&self, batches: usize, size: usize, seed: u64) -> Result<()> {
        let mut r = SplitMix64::new(seed);
        let dev = Device::Cpu;
        let mut acc: [Option<(Tensor, Tensor)>; 2] = [None, None];
        for _ in 0..batches {
            let z = Tensor::from_vec(r.normal_vec(size * self.cfg.latent, 1.0), (size, self.cfg.latent), &dev)?;
            let n = z.dim(0)?;
            let h = self.g_fc.forward(&z)?.relu()?.reshape((n, self.cfg.c2, 4, 4))?;
            let a1 = self.g_up1.forward(&h)?;
            let s1 = BatchNorm2d::batch_stats(&a1)?;
            // The second layer sees the first normalised with batch statistics, as in training.
            let h = {
                let (m, v) = &s1;
                let shape = (1, (), 1, 1);
                let scale = (self.g_bn1.gamma.as_tensor() / (v + self.g_bn1.eps)?.sqrt()?)?.reshape(shape)?;
                a1.broadcast_sub(&m.reshape(shape)?)?
                    .broadcast_mul(&scale)?
                    .broadcast_add(&self.g_bn1.beta.as_tensor().reshape(shape)?)?
                    .relu()?
            };
            let s2 = BatchNorm2d::batch_stats(&self.g_up2.forward(&h)?)?;
            for (a, s) in acc.iter_mut().zip([s1, s2]) {
                *a = Some(match a.take() {
                    None => s,
                    Some((m, v)) => ((m + s.0)?, (v + s.1)?),
                });
            }
        }
        for (bn, a) in [&self.g_bn1, &self.g_bn2].into_iter().zip(acc) {
            if let Some((m, v)) = a {
                bn.set_stats((m / batches as f64)?, (v / batches as f64)?);
            }
        }
        Ok(())
    }

    /// ONNX of the generator: input `z [n, L]`, output `image [n, 1, 16, 16]`, with
    /// `BatchNormalization` nodes after both transposed convolutions.
    pub fn export_generator(&self) -> Result<Vec<u8>> {
        let mut g = GraphBuilder::new("gan_generator");
        g.metadata("mote.family", "gan");
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata("mote.latent", &self.cfg.latent.to_string());
        let n = || Dim::Param("n".into());
        let z = g.input("z", DataType::Float, &[n(), Dim::Fixed(self.cfg.latent as i64)]);
        let h = self.g_fc.export(&mut g, &z)?;
        let h = g.op("Relu", &[&h], vec![]);
        let shape = g.const_i64_vec(&[-1, self.cfg.c2 as i64, 4, 4]);
        let h = g.op("Reshape", &[&h, &shape], vec![]);
        let h = self.g_up1.export(&mut g, &h)?;
        let h = self.g_bn1.export(&mut g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.g_up2.export(&mut g, &h)?;
        let h = self.g_bn2.export(&mut g, &h)?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = self.g_out.export(&mut g, &h)?;
        let y = g.op_named("Sigmoid", &[&h], vec![], "image");
        let side = Dim::Fixed(SIDE as i64);
        g.output(&y, DataType::Float, &[n(), Dim::Fixed(1), side.clone(), side]);
        Ok(g.finish())
    }
}

/// Training budget and settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GanTrainOptions {
    /// Architecture.
    pub config: GanConfig,
    /// Steps (one discriminator and one generator update each).
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam learning rate of both networks.
    pub lr: f64,
    /// Seed of the initialisation, batches and latents.
    pub seed: u64,
    /// Training images.
    pub train_images: usize,
    /// Held-out test images.
    pub test_images: usize,
}

impl Default for GanTrainOptions {
    fn default() -> Self {
        Self {
            config: GanConfig::default(),
            steps: 3000,
            batch_size: 32,
            lr: 2e-4,
            seed: 42,
            train_images: 16384,
            test_images: 512,
        }
    }
}

/// What training measured; serialisable.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GanReport {
    /// `gan`.
    pub family: String,
    /// Settings.
    pub options: GanTrainOptions,
    /// Generator parameters (the discriminator is not exported).
    pub generator_params: usize,
    /// Discriminator parameters.
    pub discriminator_params: usize,
    /// Wall time of training.
    pub train_seconds: f64,
    /// `(step, discriminator loss, generator loss)` every 5%.
    pub loss_curve: Vec<(usize, f64, f64)>,
    /// Energy distances `[pixels, local features]` of candle samples (latents [`LATENT_SEED`],
    /// inference-form batch-norm) to the test set.
    pub energy_candle: [f64; 2],
    /// ... of the mean image.
    pub energy_mean_image: [f64; 2],
    /// ... of independently resampled pixels.
    pub energy_independent: [f64; 2],
    /// ... of uniform noise.
    pub energy_noise: [f64; 2],
    /// ... of fresh glyphs (the floor).
    pub energy_floor: [f64; 2],
    /// Max |tract − candle| on the golden batch.
    pub onnx_vs_candle_max_abs: f32,
}

impl GanReport {
    /// Reads `train_report.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join("train_report.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Images in the golden batch.
pub const GOLDEN: usize = 8;

/// Trains the GAN and writes `generator.onnx`, `data/test.npy`, `golden/`, `calib/` and
/// `candle_samples.png` to `out`.
pub fn train_gan(out: &Path, o: &GanTrainOptions) -> Result<GanReport> {
    let cfg = o.config;
    let gan = Gan::new(cfg, o.seed)?;
    let train = glyphs(o.train_images, TRAIN_SEED);
    let test = glyphs(o.test_images, TEST_SEED);
    let dev = Device::Cpu;
    let adam =
        |vars| AdamW::new(vars, ParamsAdamW { lr: o.lr, beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 });
    let all = |p: &Params| p.all().iter().map(|p| p.var.clone()).collect::<Vec<_>>();
    let mut opt_g = adam(all(&gan.gen_params))?;
    let mut opt_d = adam(all(&gan.disc_params))?;
    let mut r = SplitMix64::new(o.seed ^ 0x9a9);
    let b = o.batch_size;
    let ones = Tensor::ones((b, 1), candle_core::DType::F32, &dev)?;
    let zeros = Tensor::zeros((b, 1), candle_core::DType::F32, &dev)?;
    let start = std::time::Instant::now();
    let (mut ema_d, mut ema_g) = (f64::NAN, f64::NAN);
    let mut loss_curve = Vec::new();
    let every = (o.steps / 20).max(1);
    for step in 0..o.steps {
        let mut batch = Vec::with_capacity(b * PIXELS);
        for _ in 0..b {
            let i = r.below(train.len());
            batch.extend_from_slice(train.image(i));
        }
        let real = Tensor::from_vec(batch, (b, 1, SIDE, SIDE), &dev)?;
        let z = Tensor::from_vec(r.normal_vec(b * cfg.latent, 1.0), (b, cfg.latent), &dev)?;
        let fake = gan.generate(&z, true)?;
        // Discriminator: real → 1, fake → 0.
        let d_loss = ((bce_with_logits(&gan.discriminate(&real)?, &ones)?.mean_all()?
            + bce_with_logits(&gan.discriminate(&fake.detach())?, &zeros)?.mean_all()?)?
            * 0.5)?;
        opt_d.step(&d_loss.backward()?)?;
        // Generator: non-saturating, fake → 1.
        let g_loss = bce_with_logits(&gan.discriminate(&fake)?, &ones)?.mean_all()?;
        let grads = g_loss.backward()?;
        opt_g.step(&grads)?;
        let (ld, lg) = (d_loss.to_scalar::<f32>()? as f64, g_loss.to_scalar::<f32>()? as f64);
        ema_d = if ema_d.is_nan() { ld } else { 0.98 * ema_d + 0.02 * ld };
        ema_g = if ema_g.is_nan() { lg } else { 0.98 * ema_g + 0.02 * lg };
        if (step + 1) % every == 0 || step + 1 == o.steps {
            loss_curve.push((step + 1, ema_d, ema_g));
            eprintln!("gan step {}: D {ema_d:.3} G {ema_g:.3} ({:.0} s)", step + 1, start.elapsed().as_secs_f64());
        }
    }
    let train_seconds = start.elapsed().as_secs_f64();
    gan.recalibrate(64, 64, o.seed ^ 0xb4)?;

    let n = test.len();
    let l = cfg.latent;
    let sample = |z: Vec<f32>| -> Result<Vec<f32>> {
        let rows = z.len() / l;
        tensor_data(&gan.generate(&Tensor::from_vec(z, (rows, l), &dev)?, false)?)
    };
    let samples = sample(gaussians(n, l, LATENT_SEED))?;
    let mean = mean_image(&train.images, PIXELS);
    let repeated: Vec<f32> = (0..n).flat_map(|_| mean.iter().copied()).collect();

    for d in ["data", "golden", "calib"] {
        std::fs::create_dir_all(out.join(d))?;
    }
    let onnx = gan.export_generator()?;
    std::fs::write(out.join("generator.onnx"), &onnx)?;
    Array::f32(vec![n, 1, SIDE, SIDE], test.images.clone()).write_npy(&out.join("data/test.npy"))?;
    let gz = gaussians(GOLDEN, l, LATENT_SEED);
    let gs = sample(gz.clone())?;
    Array::f32(vec![GOLDEN, l], gz.clone()).write_npy(&out.join("golden/z.npy"))?;
    Array::f32(vec![GOLDEN, 1, SIDE, SIDE], gs.clone()).write_npy(&out.join("golden/sample.npy"))?;
    let mut cr = SplitMix64::new(o.seed ^ 0xca1);
    for k in 0..8 {
        Array::f32(vec![GOLDEN, l], cr.normal_vec(GOLDEN * l, 1.0)).write_npy(&out.join(format!("calib/{k}.npy")))?;
    }
    let tract = crate::zoo::tract_run::run_tract_f32(&onnx, &Tensor::from_vec(gz, (GOLDEN, l), &dev)?)?;
    let onnx_vs_candle_max_abs = tract.iter().zip(&gs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    grid_png(&out.join("data/glyphs.png"), &[&test.images[..64 * PIXELS]], 8, 2)?;
    grid_png(&out.join("candle_samples.png"), &[&samples[..64 * PIXELS]], 8, 2)?;
    Ok(GanReport {
        family: "gan".into(),
        options: o.clone(),
        generator_params: gan.gen_params.count(),
        discriminator_params: gan.disc_params.count(),
        train_seconds,
        loss_curve,
        energy_candle: energies(&samples, &test.images),
        energy_mean_image: energies(&repeated, &test.images),
        energy_independent: energies(&independent_pixels(&train.images, n, BASELINE_SEED), &test.images),
        energy_noise: energies(&uniform_noise(n, BASELINE_SEED), &test.images),
        energy_floor: energies(&glyphs(n, FLOOR_SEED).images, &test.images),
        onnx_vs_candle_max_abs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_generator_matches_candle_inference() -> Result<()> {
        let mut gan = Gan::new(GanConfig { latent: 4, c1: 4, c2: 8, max_batch: 2 }, 1)?;
        gan.gen_params.randomize(0.3)?;
        gan.recalibrate(2, 8, 3)?;
        let z = SplitMix64::new(5).normal_vec(2 * 4, 1.0);
        let want = tensor_data(&gan.generate(&Tensor::from_vec(z.clone(), (2, 4), &Device::Cpu)?, false)?)?;
        let got = crate::zoo::tract_run::run_tract_f32(
            &gan.export_generator()?,
            &Tensor::from_vec(z, (2, 4), &Device::Cpu)?,
        )?;
        assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-5), "{want:?} vs {got:?}");
        Ok(())
    }
}
