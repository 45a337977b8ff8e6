//! Class-conditional diffusion on vectors of D values, trained with v-prediction, distilled
//! progressively down to one step (Salimans & Ho, 2022), and sampled with classifier-free
//! guidance (Ho & Salimans, 2021): `ddpm2d` on 2-D data (two moons, one class per moon) and
//! `ldm` on the glyph VAE's 16-D latents ([`crate::zoo::ldm`]). The data come in through
//! [`DiffusionData`].
//!
//! The denoiser is a small residual MLP, `v̂ = f(x_t, t, c)`:
//!
//! - the timestep index `t ∈ 0..T` gathers a row of a fixed sinusoidal table (`[T, F]`, an
//!   initializer, not trained), then `Linear F → H`; the class `c ∈ 0..=C` (`C` = the null
//!   class of the unconditional path) gathers a learned `[C + 1, H]` embedding; their sum
//!   through SiLU is the conditioning vector `e`;
//! - `h = Linear D → H (x_t)`, then `blocks` residual blocks
//!   `h ← h + W₂·SiLU(W₁·SiLU(h) + P_k·e)`, and `v̂ = Linear H → D (SiLU(h))`.
//!
//! The schedule is the cosine one of Nichol & Dhariwal over `T` discrete timesteps, with
//! ᾱ_{T−1} ≈ 0 ([`Schedule::cosine`]). With α = √ᾱ_t and σ = √(1−ᾱ_t) the model predicts
//! `v = α·ε − σ·x₀`, so `x̂₀ = α·x_t − σ·v̂` and `ε̂ = σ·x_t + α·v̂` stay well conditioned at
//! every t (ε-prediction divides by α ≈ 0 at the first step, which breaks few-step samplers).
//!
//! The exported graph (`x [n, D]` f32, `t [n]` int64, `class [n]` int64 → `v [n, D]`) carries
//! the schedule and the prediction type in its metadata (`mote.diffusion.*`), which is all the
//! runtime's sampler needs.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::diffusion::{Denoiser, DenoiserConfig};
//! let m = Denoiser::new(DenoiserConfig::default(), 0)?;
//! let x = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu)?;
//! let t = Tensor::new(&[0u32, 5, 127], &Device::Cpu)?;
//! let c = Tensor::new(&[0u32, 1, 2], &Device::Cpu)?;
//! assert_eq!(m.forward(&x, &t, &c)?.dims(), &[3, 2]);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod card;
pub mod data;
pub mod distill;
pub mod metrics;
pub mod sampler;
pub mod train;

pub use data::{DiffusionData, Labelled, Moons};
pub use distill::{distill, distill_on, DistillOptions, DistillReport};
pub use sampler::{ddim_step, guided, Condition, Schedule};
pub use train::{train_teacher, train_teacher_on, TeacherReport, TrainOptions};

use std::path::Path;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::layers::{export_tensor, Embedding, Linear, Params, ZooLayer};
use super::onnx_builder::{DataType, Dim, GraphBuilder};

/// The metadata keys of the runtime's sampler (prediction type, supported step counts, the
/// unconditional class id, the schedule ᾱ_t for t = 0..T−1): the converter writes exactly what
/// `mote::diffusion` reads.
pub use mote::diffusion::{GRID_KEY, NULL_CLASS_KEY, PREDICTION_KEY, SCHEDULE_KEY, STEPS_KEY};

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct DenoiserConfig {
    /// Discrete timesteps T of the schedule.
    pub timesteps: usize,
    /// Hidden width H.
    pub hidden: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Sinusoidal features F of the timestep (F/2 frequencies, sine and cosine).
    pub time_features: usize,
    /// Data classes C; class id C is the null (unconditional) class.
    pub classes: usize,
    /// Batch bound `n` of the exported graph (the converter's `--dim n=…`).
    pub max_batch: usize,
    /// Data dimension D: values per row of `x` (2 for points in the plane; absent from
    /// reports written before it existed, which are all 2-D).
    #[serde(default = "two")]
    pub dim: usize,
}

fn two() -> usize {
    2
}

impl Default for DenoiserConfig {
    /// The `ddpm2d` model: T = 128, H = 64, 2 blocks, 32 time features, 2 classes, batches of
    /// 64 points of dimension 2.
    fn default() -> Self {
        Self { timesteps: 128, hidden: 64, blocks: 2, time_features: 32, classes: 2, max_batch: 64, dim: 2 }
    }
}

impl DenoiserConfig {
    /// The class id of the unconditional path.
    pub fn null_class(&self) -> usize {
        self.classes
    }
}

/// SiLU, `x·σ(x)`: candle's `silu` in training, `Sigmoid → Mul` in ONNX.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silu;

impl ZooLayer for Silu {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.silu()
    }

    fn export(&self, g: &mut GraphBuilder, input: &str) -> Result<String> {
        let s = g.op("Sigmoid", &[input], vec![]);
        Ok(g.op("Mul", &[input, &s], vec![]))
    }
}

/// One residual block `h + W₂·SiLU(W₁·SiLU(h) + P·e)`.
#[derive(Debug)]
struct Block {
    fc1: Linear,
    cond: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, h: &Tensor, e: &Tensor) -> candle_core::Result<Tensor> {
        let a = (self.fc1.forward(&h.silu()?)? + self.cond.forward(e)?)?;
        h + self.fc2.forward(&a.silu()?)?
    }

    fn export(&self, g: &mut GraphBuilder, h: &str, e: &str) -> Result<String> {
        let a = Silu.export(g, h)?;
        let a = self.fc1.export(g, &a)?;
        let c = self.cond.export(g, e)?;
        let a = g.op("Add", &[&a, &c], vec![]);
        let a = Silu.export(g, &a)?;
        let a = self.fc2.export(g, &a)?;
        Ok(g.op("Add", &[h, &a], vec![]))
    }
}

/// The sinusoidal timestep table `[T, F]`: row t holds `sin(t·ω_k)` then `cos(t·ω_k)` for
/// `ω_k = (4T)^(−k/(F/2−1))`, k = 0..F/2 (periods from 2π to 8πT steps).
pub fn time_table(timesteps: usize, features: usize) -> Vec<f32> {
    let half = (features / 2).max(1);
    let span = (4.0 * timesteps as f64).ln();
    let mut out = Vec::with_capacity(timesteps * features);
    for t in 0..timesteps {
        let row: Vec<f64> = (0..half).map(|k| t as f64 * (-span * k as f64 / (half.max(2) - 1) as f64).exp()).collect();
        out.extend(row.iter().map(|a| a.sin() as f32));
        out.extend(row.iter().map(|a| a.cos() as f32));
        out.resize((t + 1) * features, 0.0);
    }
    out
}

/// The v-predicting denoiser; see the module docs.
#[derive(Debug)]
pub struct Denoiser {
    cfg: DenoiserConfig,
    params: Params,
    time_table: Tensor,
    time_in: Linear,
    class_emb: Embedding,
    x_in: Linear,
    blocks: Vec<Block>,
    out: Linear,
}

impl Denoiser {
    /// A freshly initialised denoiser (weights drawn from `seed`; each block's output projection
    /// and the output layer start small, so the untrained net is close to `v̂ = 0`).
    pub fn new(cfg: DenoiserConfig, seed: u64) -> Result<Self> {
        ensure!(cfg.timesteps > 0 && cfg.hidden > 0 && cfg.classes > 0 && cfg.dim > 0, "empty denoiser configuration");
        let mut p = Params::new(seed);
        let h = cfg.hidden;
        let he = |fan_in: usize| (2.0 / fan_in as f64).sqrt();
        let time_table = Tensor::from_vec(
            time_table(cfg.timesteps, cfg.time_features),
            (cfg.timesteps, cfg.time_features),
            &Device::Cpu,
        )?;
        let time_in = Linear::new(&mut p, "time.fc", cfg.time_features, h, he(cfg.time_features))?;
        let class_emb = Embedding::new(&mut p, "class.emb", cfg.classes + 1, h, 1.0)?;
        let x_in = Linear::new(&mut p, "x_in", cfg.dim, h, 1.0)?;
        let mut blocks = Vec::new();
        for k in 0..cfg.blocks {
            blocks.push(Block {
                fc1: Linear::new(&mut p, &format!("b{k}.fc1"), h, h, he(h))?,
                cond: Linear::new(&mut p, &format!("b{k}.cond"), h, h, he(h))?,
                fc2: Linear::new(&mut p, &format!("b{k}.fc2"), h, h, 0.1 * he(h))?,
            });
        }
        let out = Linear::new(&mut p, "out", h, cfg.dim, 0.01)?;
        Ok(Self { cfg, params: p, time_table, time_in, class_emb, x_in, blocks, out })
    }

    /// The architecture.
    pub fn config(&self) -> &DenoiserConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// `v̂ [n, D]` for `x [n, D]` f32, timestep ids `t [n]` and class ids `class [n]` (u32).
    pub fn forward(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        let feat = self.time_table.index_select(t, 0)?;
        let e = (self.time_in.forward(&feat)? + self.class_emb.forward(class)?)?.silu()?;
        let mut h = self.x_in.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h, &e)?;
        }
        self.out.forward(&h.silu()?)
    }

    /// ONNX of the `ddpm2d` denoiser ([`Denoiser::export_family`] with family `ddpm2d`).
    pub fn export(&self, schedule: &Schedule, steps: Option<&[usize]>) -> Result<Vec<u8>> {
        self.export_family("ddpm2d", schedule, steps)
    }

    /// ONNX of the denoiser, graph `<family>_denoise`: inputs `x [n, D]` f32, `t [n]` int64,
    /// `class [n]` int64, output `v [n, D]`; metadata: `mote.family`, the schedule,
    /// `prediction = v`, the null class, the batch bound and, for a distilled student, the step
    /// counts it supports (`steps`).
    pub fn export_family(&self, family: &str, schedule: &Schedule, steps: Option<&[usize]>) -> Result<Vec<u8>> {
        ensure!(
            schedule.len() == self.cfg.timesteps,
            "schedule of {} steps for a T = {} model",
            schedule.len(),
            self.cfg.timesteps
        );
        let n = || Dim::Param("n".into());
        let d = || Dim::Fixed(self.cfg.dim as i64);
        let mut g = GraphBuilder::new(&format!("{family}_denoise"));
        g.input("x", DataType::Float, &[n(), d()]);
        g.input("t", DataType::Int64, &[n()]);
        g.input("class", DataType::Int64, &[n()]);
        let table = export_tensor(&mut g, "time.features", &self.time_table)?;
        g.push_scope("time");
        let feat = g.op("Gather", &[&table, "t"], vec![super::onnx_builder::attr_int("axis", 0)]);
        g.pop_scope();
        let te = self.time_in.export(&mut g, &feat)?;
        let ce = self.class_emb.export(&mut g, "class")?;
        let e = g.op("Add", &[&te, &ce], vec![]);
        let e = Silu.export(&mut g, &e)?;
        let mut h = self.x_in.export(&mut g, "x")?;
        for (k, b) in self.blocks.iter().enumerate() {
            g.push_scope(&format!("b{k}"));
            h = b.export(&mut g, &h, &e)?;
            g.pop_scope();
        }
        let h = Silu.export(&mut g, &h)?;
        let v = self.out.export_as(&mut g, &h, Some("v"))?;
        g.output(&v, DataType::Float, &[n(), d()]);
        g.metadata("mote.family", family);
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata(SCHEDULE_KEY, &schedule.metadata());
        if let Some(grid) = schedule.grid_metadata() {
            g.metadata(GRID_KEY, &grid);
        }
        g.metadata(PREDICTION_KEY, "v");
        g.metadata(NULL_CLASS_KEY, &self.cfg.null_class().to_string());
        if let Some(steps) = steps {
            let list: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
            g.metadata(STEPS_KEY, &list.join(","));
        }
        Ok(g.finish())
    }

    /// Loads the weights of a denoiser exported with `cfg` from its ONNX file.
    pub fn load_onnx(cfg: DenoiserConfig, path: &Path) -> Result<Self> {
        let m = Self::new(cfg, 0)?;
        // Every `.weight` is a [`Linear`] stored `[in, out]`, except the class embedding's.
        m.params.load_onnx_initializers(path, &|p| p.name.ends_with(".weight") && p.name != "class.emb.weight")?;
        Ok(m)
    }

    /// A new denoiser with a copy of this one's weights (a student initialised from its teacher).
    pub fn duplicate(&self) -> Result<Self> {
        let m = Self::new(self.cfg, 0)?;
        m.params.copy_from(&self.params)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::rng::SplitMix64;

    fn inputs(n: usize, cfg: &DenoiserConfig) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
        let mut r = SplitMix64::new(3);
        let x = r.normal_vec(cfg.dim * n, 1.0);
        let t = (0..n).map(|_| r.below(cfg.timesteps) as u32).collect();
        let c = (0..n).map(|_| r.below(cfg.classes + 1) as u32).collect();
        (x, t, c)
    }

    fn run(m: &Denoiser, x: &[f32], t: &[u32], c: &[u32]) -> Result<Vec<f32>> {
        let (n, dev) = (t.len(), Device::Cpu);
        let xt = Tensor::from_vec(x.to_vec(), (n, m.config().dim), &dev)?;
        let v = m.forward(&xt, &Tensor::new(t, &dev)?, &Tensor::new(c, &dev)?)?;
        Ok(v.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn export_matches_candle_and_reloads() -> Result<()> {
        use crate::array::Array;
        let dir = std::env::temp_dir().join(format!("mote-ddpm2d-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for dim in [2, 5] {
            let cfg = DenoiserConfig { hidden: 16, blocks: 2, dim, ..DenoiserConfig::default() };
            let mut m = Denoiser::new(cfg, 1)?;
            m.params.randomize(0.3)?;
            let n = 7;
            let (x, t, c) = inputs(n, &cfg);
            let want = run(&m, &x, &t, &c)?;
            let path = dir.join(format!("m{dim}.onnx"));
            std::fs::write(&path, m.export_family("test", &Schedule::cosine(cfg.timesteps), Some(&[4]))?)?;
            let ids = |v: &[u32]| Array::i64(vec![n], v.iter().map(|&v| v as i64).collect());
            let inputs = [Array::f32(vec![n, dim], x.clone()), ids(&t), ids(&c)];
            let got = crate::verify::tract_reference(&path, &inputs)?;
            let got = got[0].to_f32();
            assert_eq!(got.len(), n * dim);
            assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-5), "{want:?} vs {got:?}");
            let back = Denoiser::load_onnx(cfg, &path)?.duplicate()?;
            assert_eq!(want, run(&back, &x, &t, &c)?);
            // A file of another data dimension does not load.
            let other = DenoiserConfig { dim: dim + 1, ..cfg };
            assert!(Denoiser::load_onnx(other, &path).is_err());
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn configs_without_a_dimension_are_two_dimensional() -> Result<()> {
        let mut json = serde_json::to_value(DenoiserConfig { dim: 7, ..DenoiserConfig::default() })?;
        assert_eq!(json["dim"], 7);
        json.as_object_mut().map(|o| o.remove("dim"));
        let back: DenoiserConfig = serde_json::from_value(json)?;
        assert_eq!(back, DenoiserConfig::default());
        Ok(())
    }

    #[test]
    fn time_table_rows_are_distinct_sinusoids() {
        let tab = time_table(128, 32);
        assert_eq!(tab.len(), 128 * 32);
        assert_eq!(&tab[..2], &[0.0, 0.0]);
        assert_eq!(tab[16], 1.0); // cos 0
        assert!((tab[32] - 1f32.sin()).abs() < 1e-7); // t = 1, ω₀ = 1
        for t in 1..128 {
            let d: f32 = (0..32).map(|k| (tab[t * 32 + k] - tab[(t - 1) * 32 + k]).abs()).sum();
            assert!(d > 0.01, "rows {t} and {} too close", t - 1);
        }
    }
}
