//! `ddpm`: a small class-conditional UNet denoiser on 16×16 glyphs ([`crate::zoo::vae::glyphs`]),
//! built from the runtime's building blocks and trained with v-prediction on the cosine
//! schedule of [`crate::zoo::diffusion`] (whose schedule, DDIM sampler and metadata keys it
//! reuses).
//!
//! Architecture, with widths `c = [c₀, c₁, c₂]` at 16×16, 8×8 and 4×4 ([`UNetConfig::channels`]):
//!
//! ```text
//! e   = SiLU(W₂·SiLU(W₁·table[t]) + class_emb[class])    sinusoidal table + MLP, class id C = null
//! h   = Conv3×3(x)                                 1 → c₀   16×16
//! s₀  = Res(h)                                     c₀ → c₀  16×16
//! s₁  = Res(Conv3×3/2(s₀))                         c₀ → c₁   8×8
//! h   = Attn(Res(Conv3×3/2(s₁)))                   c₁ → c₂   4×4  (self-attention over 16 pixels)
//! h   = Res([Conv3×3(Up(h)), s₁])                  c₂ → c₁, concat 2c₁ → c₁   8×8
//! h   = Res([Conv3×3(Up(h)), s₀])                  c₁ → c₀, concat 2c₀ → c₀  16×16
//! v̂   = Conv3×3(SiLU(GN(h)))                       c₀ → 1   16×16
//! ```
//!
//! `Res` is [`blocks::ResBlock`] (GroupNorm → SiLU → Conv3×3, plus the embedding projected per
//! channel, GroupNorm → SiLU → Conv3×3, plus a 1×1 skip when the width changes), `Up` is
//! nearest-neighbour ×2 and `Attn` is [`blocks::SelfAttention2d`].
//!
//! The exported graph (`x [n, 1, 16, 16]` f32, `t [n]` int64, `class [n]` int64 →
//! `v [n, 1, 16, 16]`) is written at opset 21 (for `GroupNormalization`'s per-channel
//! parameters) and carries the schedule, `prediction = v` and the null class in its metadata,
//! which is all the runtime's sampler (`mote::diffusion`) needs. [`distill`] turns the teacher
//! into 4-, 2- and 1-step students (progressive distillation, `mote zoo distill ddpm`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use mote_converters::zoo::unet::{UNet, UNetConfig};
//! let m = UNet::new(UNetConfig::default(), 0)?;
//! let x = Tensor::zeros((2, 1, 16, 16), DType::F32, &Device::Cpu)?;
//! let t = Tensor::new(&[0u32, 127], &Device::Cpu)?;
//! let c = Tensor::new(&[3u32, 6], &Device::Cpu)?;
//! assert_eq!(m.forward(&x, &t, &c)?.dims(), &[2, 1, 16, 16]);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod blocks;
pub mod card;
pub mod classifier;
pub mod distill;
pub mod evaluate;
pub mod fused;
pub mod im2col;
pub mod sampling;
pub mod train;

use std::path::Path;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::diffusion::{time_table, Schedule, Silu, GRID_KEY, NULL_CLASS_KEY, PREDICTION_KEY, SCHEDULE_KEY, STEPS_KEY};
use super::layers::{export_tensor, Embedding, Linear, Params, ZooLayer};
use super::onnx_builder::{attr_int, DataType, Dim, GraphBuilder};
use super::vae::SIDE;
use crate::import::pointwise::{POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE};
use blocks::{conv3, export_upsample2x, scale_param, upsample2x, Conv, GroupNorm, ResBlock, SelfAttention2d};

/// ONNX opset of the export (per-channel `GroupNormalization`).
pub const OPSET: i64 = 21;
/// ONNX IR version that opset [`OPSET`] requires.
pub const IR_VERSION: i64 = 10;

/// Architecture hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct UNetConfig {
    /// Discrete timesteps T of the schedule.
    pub timesteps: usize,
    /// Widths at 16×16, 8×8 and 4×4.
    pub channels: [usize; 3],
    /// Groups of every group norm (divides every width).
    pub groups: usize,
    /// Attention heads at 4×4.
    pub heads: usize,
    /// Sinusoidal features of the timestep.
    pub time_features: usize,
    /// Width E of the time and class embedding.
    pub embed: usize,
    /// Data classes C; class id C is the null (unconditional) class.
    pub classes: usize,
    /// Batch bound `n` of the device file (the converter's `--dim n=…`).
    pub max_batch: usize,
}

impl Default for UNetConfig {
    /// The zoo model: T = 128, widths 16/32/32, 8 groups, 2 heads, 32 time features,
    /// embedding 64, the 6 glyph classes, one image per call on the device.
    fn default() -> Self {
        Self {
            timesteps: 128,
            channels: [16, 32, 32],
            groups: 8,
            heads: 2,
            time_features: 32,
            embed: 64,
            classes: 6,
            max_batch: 1,
        }
    }
}

impl UNetConfig {
    /// The class id of the unconditional path.
    pub fn null_class(&self) -> usize {
        self.classes
    }
}

/// The UNet denoiser; see the module docs.
#[derive(Debug)]
pub struct UNet {
    cfg: UNetConfig,
    params: Params,
    time_table: Tensor,
    time_fc1: Linear,
    time_fc2: Linear,
    class_emb: Embedding,
    conv_in: Conv,
    res0: ResBlock,
    down0: Conv,
    res1: ResBlock,
    down1: Conv,
    mid: ResBlock,
    attn: SelfAttention2d,
    up1: Conv,
    res_up1: ResBlock,
    up0: Conv,
    res_up0: ResBlock,
    norm_out: GroupNorm,
    conv_out: Conv,
}

impl UNet {
    /// A freshly initialised UNet (weights from `seed`; residual branches and the output
    /// convolution start small, so the untrained net is close to `v̂ = 0`).
    pub fn new(cfg: UNetConfig, seed: u64) -> Result<Self> {
        let [c0, c1, c2] = cfg.channels;
        ensure!(
            cfg.timesteps > 0 && cfg.classes > 0 && cfg.embed > 0 && cfg.time_features >= 2 && cfg.max_batch > 0,
            "empty UNet configuration {cfg:?}"
        );
        let (e, gr) = (cfg.embed, cfg.groups);
        let mut p = Params::new(seed);
        let time_table = Tensor::from_vec(
            time_table(cfg.timesteps, cfg.time_features),
            (cfg.timesteps, cfg.time_features),
            &Device::Cpu,
        )?;
        let he = |fan_in: usize| (2.0 / fan_in as f64).sqrt();
        let time_fc1 = Linear::new(&mut p, "time.fc1", cfg.time_features, e, he(cfg.time_features))?;
        let time_fc2 = Linear::new(&mut p, "time.fc2", e, e, he(e))?;
        let class_emb = Embedding::new(&mut p, "class.emb", cfg.classes + 1, e, 1.0)?;
        let conv_in = conv3(&mut p, "conv_in", 1, c0, 1)?;
        let res0 = ResBlock::new(&mut p, "res0", c0, c0, e, gr)?;
        let down0 = conv3(&mut p, "down0", c0, c0, 2)?;
        let res1 = ResBlock::new(&mut p, "res1", c0, c1, e, gr)?;
        let down1 = conv3(&mut p, "down1", c1, c1, 2)?;
        let mid = ResBlock::new(&mut p, "mid", c1, c2, e, gr)?;
        let attn = SelfAttention2d::new(&mut p, "attn", c2, cfg.heads, gr)?;
        let up1 = conv3(&mut p, "up1", c2, c1, 1)?;
        let res_up1 = ResBlock::new(&mut p, "res_up1", 2 * c1, c1, e, gr)?;
        let up0 = conv3(&mut p, "up0", c1, c0, 1)?;
        let res_up0 = ResBlock::new(&mut p, "res_up0", 2 * c0, c0, e, gr)?;
        let norm_out = GroupNorm::new(&mut p, "norm_out", c0, gr)?;
        let conv_out = conv3(&mut p, "conv_out", c0, 1, 1)?;
        scale_param(&p, "conv_out.weight", 0.1)?;
        Ok(Self {
            cfg,
            params: p,
            time_table,
            time_fc1,
            time_fc2,
            class_emb,
            conv_in,
            res0,
            down0,
            res1,
            down1,
            mid,
            attn,
            up1,
            res_up1,
            up0,
            res_up0,
            norm_out,
            conv_out,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The trainable parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The activated embedding `SiLU(time MLP + class embedding)` `[n, E]`.
    fn embedding(&self, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        let feat = self.time_table.index_select(t, 0)?;
        let te = self.time_fc2.forward(&self.time_fc1.forward(&feat)?.silu()?)?;
        (te + self.class_emb.forward(class)?)?.silu()
    }

    /// `v̂ [n, 1, 16, 16]` for `x [n, 1, 16, 16]` f32, timestep ids `t [n]` and class ids
    /// `class [n]` (u32; the null class is [`UNetConfig::null_class`]).
    pub fn forward(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        let e = self.embedding(t, class)?;
        let h = self.conv_in.forward(x)?;
        let s0 = self.res0.forward(&h, &e)?;
        let s1 = self.res1.forward(&self.down0.forward(&s0)?, &e)?;
        let h = self.mid.forward(&self.down1.forward(&s1)?, &e)?;
        let h = self.attn.forward(&h)?;
        let h = self.up1.forward(&upsample2x(&h)?)?;
        let h = self.res_up1.forward(&Tensor::cat(&[&h, &s1], 1)?, &e)?;
        let h = self.up0.forward(&upsample2x(&h)?)?;
        let h = self.res_up0.forward(&Tensor::cat(&[&h, &s0], 1)?, &e)?;
        self.conv_out.forward(&fused::silu(&self.norm_out.forward(&h)?)?)
    }

    /// [`UNet::forward`] on flattened rows `x [n, 256]`, returning `[n, 256]` (the layout of a
    /// sampler's state).
    pub fn forward_rows(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        self.forward(&x.reshape((n, 1, SIDE, SIDE))?, t, class)?.reshape((n, SIDE * SIDE))
    }

    /// ONNX of the denoiser: inputs `x [n, 1, 16, 16]` f32, `t [n]` int64, `class [n]` int64,
    /// output `v [n, 1, 16, 16]`; metadata: the schedule, `prediction = v`, the null class, the
    /// batch bound and, for a distilled student, the step counts it supports (`steps`).
    pub fn export(&self, schedule: &Schedule, steps: Option<&[usize]>) -> Result<Vec<u8>> {
        ensure!(
            schedule.len() == self.cfg.timesteps,
            "schedule of {} steps for a T = {} model",
            schedule.len(),
            self.cfg.timesteps
        );
        let n = || Dim::Param("n".into());
        let image = || [n(), Dim::Fixed(1), Dim::Fixed(SIDE as i64), Dim::Fixed(SIDE as i64)];
        let mut g = GraphBuilder::new("ddpm_unet_denoise");
        g.input("x", DataType::Float, &image());
        g.input("t", DataType::Int64, &[n()]);
        g.input("class", DataType::Int64, &[n()]);
        let table = export_tensor(&mut g, "time.features", &self.time_table)?;
        g.push_scope("time");
        let feat = g.op("Gather", &[&table, "t"], vec![attr_int("axis", 0)]);
        g.pop_scope();
        let te = self.time_fc1.export(&mut g, &feat)?;
        let te = Silu.export(&mut g, &te)?;
        let te = self.time_fc2.export(&mut g, &te)?;
        let ce = self.class_emb.export(&mut g, "class")?;
        let e = g.op("Add", &[&te, &ce], vec![]);
        let e = Silu.export(&mut g, &e)?;
        let h = self.conv_in.export(&mut g, "x")?;
        let s0 = self.res0.export(&mut g, &h, &e)?;
        let h = self.down0.export(&mut g, &s0)?;
        let s1 = self.res1.export(&mut g, &h, &e)?;
        let h = self.down1.export(&mut g, &s1)?;
        let h = self.mid.export(&mut g, &h, &e)?;
        let h = self.attn.export_at(&mut g, &h, SIDE / 4, SIDE / 4)?;
        let h = export_upsample2x(&mut g, &h);
        let h = self.up1.export(&mut g, &h)?;
        let h = g.op("Concat", &[&h, &s1], vec![attr_int("axis", 1)]);
        let h = self.res_up1.export(&mut g, &h, &e)?;
        let h = export_upsample2x(&mut g, &h);
        let h = self.up0.export(&mut g, &h)?;
        let h = g.op("Concat", &[&h, &s0], vec![attr_int("axis", 1)]);
        let h = self.res_up0.export(&mut g, &h, &e)?;
        let h = self.norm_out.export(&mut g, &h)?;
        let h = Silu.export(&mut g, &h)?;
        let h = self.conv_out.export(&mut g, &h)?;
        let v = g.op_named("Identity", &[&h], vec![], "v");
        g.output(&v, DataType::Float, &image());
        g.metadata("mote.family", "ddpm");
        g.metadata("mote.max_batch", &self.cfg.max_batch.to_string());
        g.metadata(SCHEDULE_KEY, &schedule.metadata());
        if let Some(grid) = schedule.grid_metadata() {
            g.metadata(GRID_KEY, &grid);
        }
        g.metadata(PREDICTION_KEY, "v");
        g.metadata(NULL_CLASS_KEY, &self.cfg.null_class().to_string());
        // The three 1×1 skip convolutions stay `Conv` ops: as patch MatMuls their layout
        // transposes set the arena's peak, and the 3×3 convolutions around them run in float.
        g.metadata(POINTWISE_CONV_KEY, POINTWISE_CONV_VALUE);
        if let Some(steps) = steps {
            let list: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
            g.metadata(STEPS_KEY, &list.join(","));
        }
        let mut model = g.into_model();
        model.ir_version = IR_VERSION;
        if let Some(o) = model.opset_import.first_mut() {
            o.version = OPSET;
        }
        Ok(model.encode_to_vec())
    }

    /// Loads the weights of a UNet exported with `cfg` from its ONNX file.
    pub fn load_onnx(cfg: UNetConfig, path: &Path) -> Result<Self> {
        let m = Self::new(cfg, 0)?;
        // Every 2-D `.weight` is a [`Linear`] stored `[in, out]`, except the class embedding's.
        m.params.load_onnx_initializers(path, &|p| {
            p.name.ends_with(".weight") && p.var.rank() == 2 && p.name != "class.emb.weight"
        })?;
        Ok(m)
    }

    /// A new UNet with a copy of this one's weights (e.g. a student initialised from its
    /// teacher).
    pub fn duplicate(&self) -> Result<Self> {
        let m = Self::new(self.cfg, 0)?;
        m.params.copy_from(&self.params)?;
        Ok(m)
    }

    /// Overwrites every parameter with normal(0, std) noise (for export-parity tests: a fresh
    /// UNet has γ = 1, β = 0 and zero biases, which would hide layout mistakes).
    pub fn randomize(&mut self, std: f64) -> Result<()> {
        self.params.randomize(std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::rng::SplitMix64;

    #[test]
    fn export_matches_candle_and_reloads() -> Result<()> {
        use crate::array::Array;
        let cfg = UNetConfig { timesteps: 16, channels: [8, 16, 16], groups: 4, embed: 16, ..UNetConfig::default() };
        let mut m = UNet::new(cfg, 1)?;
        m.randomize(0.2)?;
        let n = 3;
        let mut r = SplitMix64::new(3);
        let x = r.normal_vec(n * 256, 1.0);
        let t: Vec<u32> = (0..n).map(|_| r.below(cfg.timesteps) as u32).collect();
        let c: Vec<u32> = (0..n).map(|i| (i % (cfg.classes + 1)) as u32).collect();
        let dev = Device::Cpu;
        let xt = Tensor::from_vec(x.clone(), (n, 1, 16, 16), &dev)?;
        let run = |m: &UNet| -> Result<Vec<f32>> {
            Ok(m.forward(&xt, &Tensor::new(t.as_slice(), &dev)?, &Tensor::new(c.as_slice(), &dev)?)?
                .flatten_all()?
                .to_vec1()?)
        };
        let want = run(&m)?;
        let dir = std::env::temp_dir().join(format!("mote-unet-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("m.onnx");
        std::fs::write(&path, m.export(&Schedule::cosine(cfg.timesteps), None)?)?;
        let ids = |v: &[u32]| Array::i64(vec![n], v.iter().map(|&v| v as i64).collect());
        let got = crate::verify::tract_reference(&path, &[Array::f32(vec![n, 1, 16, 16], x), ids(&t), ids(&c)])?;
        let err = crate::family::max_abs(&got[0].to_f32(), &want);
        assert!(err < 1e-4, "tract vs candle {err}");
        let back = UNet::load_onnx(cfg, &path)?.duplicate()?;
        assert_eq!(want, run(&back)?);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
