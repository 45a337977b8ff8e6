//! Candle-side sampling of the UNet with the host sampler of [`crate::zoo::diffusion::sampler`]
//! (deterministic DDIM, classifier-free guidance) plus DDPM's ancestral step, drawing the
//! starting noise exactly as the runtime does for a one-image-per-call file: sample k starts
//! from [`initial_noise`]`(256, seed + k)`, the noise `mote::diffusion::sample` draws for seed
//! `seed + k`.
//!
//! ```no_run
//! use mote_converters::zoo::diffusion::{Condition, Schedule};
//! use mote_converters::zoo::unet::sampling::{candle_samples, Method};
//! use mote_converters::zoo::unet::{UNet, UNetConfig};
//! let m = UNet::new(UNetConfig::default(), 0)?;
//! let s = Schedule::cosine(128);
//! let images = candle_samples(&m, &s, Method::Ddim, 4, Condition::Class(2), 8, 1)?;
//! assert_eq!(images.len(), 8 * 256);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::UNet;
use crate::zoo::diffusion::sampler::{ddim_sample, initial_noise, predict, x0_eps, Condition, Schedule};
use crate::zoo::vae::PIXELS;

/// Images per candle call when sampling.
pub const CHUNK: usize = 64;

/// The update rule of a host-side sampling run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Deterministic DDIM (η = 0).
    Ddim,
    /// DDPM ancestral sampling (posterior variance β̃).
    Ddpm,
}

/// Candle's v̂ for rows `x` (flattened `[n, 256]`) at timestep `t`, every row of `class`.
pub fn candle_predict(m: &UNet, x: &[f32], t: isize, class: usize) -> Result<Vec<f32>> {
    let n = x.len() / PIXELS;
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(x.to_vec(), (n, PIXELS), &dev)?;
    let tt = Tensor::from_vec(vec![t.max(0) as u32; n], n, &dev)?;
    let ct = Tensor::from_vec(vec![class as u32; n], n, &dev)?;
    Ok(m.forward_rows(&xt, &tt, &ct)?.flatten_all()?.to_vec1()?)
}

/// The starting noise of samples `first..first + count` for `seed`: the runtime's draw for
/// seeds `seed + first ..`.
pub fn start_noise(first: usize, count: usize, seed: u64) -> Vec<f32> {
    (first..first + count).flat_map(|k| initial_noise(PIXELS, seed + k as u64)).collect()
}

/// One DDPM ancestral step of every value of `x` from `t` to `prev` given the v-prediction `v`
/// and standard-normal noise `z` (ignored on the last step):
/// `x ← √ᾱ_prev·β/(1−ᾱ_t)·x̂₀ + √(1−β)·(1−ᾱ_prev)/(1−ᾱ_t)·x + σ·z`, σ² = β·(1−ᾱ_prev)/(1−ᾱ_t),
/// β = 1 − ᾱ_t/ᾱ_prev (the runtime's `Method::Ddpm`).
pub fn ddpm_step(s: &Schedule, x: &[f32], v: &[f32], z: &[f32], t: isize, prev: isize) -> Vec<f32> {
    let (a, ap) = (s.alpha_bar(t), s.alpha_bar(prev));
    let beta = 1.0 - a / ap;
    let c0 = ap.sqrt() * beta / (1.0 - a);
    let ct = (1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - a);
    let sd = if prev < 0 { 0.0 } else { (beta * (1.0 - ap) / (1.0 - a)).sqrt() };
    x.iter()
        .zip(v)
        .zip(z)
        .map(|((&x, &v), &z)| {
            let (x0, _) = x0_eps(s, x as f64, v as f64, t);
            (c0 * x0 + ct * x as f64 + sd * z as f64) as f32
        })
        .collect()
}

/// `count` candle samples (flattened `[count, 256]`, model space ≈ [−1, 1]) with `steps`
/// steps of `method` under `cond`, in chunks of [`CHUNK`]; sample k starts from the runtime's
/// noise for `seed + k`. DDPM's per-step noise comes from `mote::rng::Rng` seeded per chunk.
pub fn candle_samples(
    m: &UNet,
    s: &Schedule,
    method: Method,
    steps: usize,
    cond: Condition,
    count: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let null = m.config().null_class();
    let mut out = Vec::with_capacity(count * PIXELS);
    let mut first = 0;
    while first < count {
        let rows = CHUNK.min(count - first);
        let mut x = start_noise(first, rows, seed);
        let mut f = |x: &[f32], t: isize, c: usize| candle_predict(m, x, t, c);
        match method {
            Method::Ddim => ddim_sample(&mut f, s, steps, &mut x, cond, null)?,
            Method::Ddpm => {
                let mut rng = mote::rng::Rng::new(seed ^ 0xddb3 ^ ((first as u64) << 20));
                for (t, prev) in s.steps(steps) {
                    let v = predict(&mut f, &x, t, cond, null)?;
                    let z: Vec<f32> = (0..x.len()).map(|_| rng.gaussian()).collect();
                    x = ddpm_step(s, &x, &v, &z, t, prev);
                }
            }
        }
        out.extend_from_slice(&x);
        first += rows;
    }
    Ok(out)
}

/// Model-space images (≈ [−1, 1]) as pixels in [0, 1]: `(x + 1) / 2`, clamped.
pub fn to_pixels(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect()
}

/// Pixels in [0, 1] as model-space data `2p − 1`.
pub fn to_model(p: &[f32]) -> Vec<f32> {
    p.iter().map(|&v| 2.0 * v - 1.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddpm_with_the_true_v_and_no_noise_lands_on_the_data() {
        // A point mass at x₀: the exact v̂ at (x_t, t) is (α·x_t − x₀)/σ; without noise every
        // posterior mean keeps x̂₀ = x₀, and the last step returns it.
        let s = Schedule::cosine(32);
        let x0 = 0.3f64;
        let mut x = vec![1.5f32, -0.7];
        for (t, prev) in s.steps(32) {
            let (a, sg) = s.alpha_sigma(t);
            let v: Vec<f32> = x.iter().map(|&x| ((a * x as f64 - x0) / sg) as f32).collect();
            x = ddpm_step(&s, &x, &v, &[0.0, 0.0], t, prev);
        }
        assert!(x.iter().all(|&v| (v as f64 - x0).abs() < 1e-4), "{x:?}");
        assert_eq!(to_pixels(&to_model(&[0.0, 0.25, 1.0])), vec![0.0, 0.25, 1.0]);
    }

    #[test]
    fn start_noise_is_the_runtimes_per_sample_draw() {
        let all = start_noise(0, 3, 40);
        assert_eq!(&all[PIXELS..], &start_noise(1, 2, 40)[..]);
        assert_eq!(&all[..PIXELS], &initial_noise(PIXELS, 40)[..]);
    }
}
