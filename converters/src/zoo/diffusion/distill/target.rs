//! The distillation target: where the teacher's DDIM steps inside one student step land, turned
//! into the student's v target (the arithmetic of the [`super`] module docs), for any
//! [`RowDenoiser`].

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

use crate::zoo::diffusion::sampler::Schedule;
use crate::zoo::diffusion::Denoiser;
use crate::zoo::layers::Params;

/// Per-row (α, σ) of timesteps `ts` as `[n, 1]` tensors.
fn coefficients(s: &Schedule, ts: &[isize]) -> Result<(Tensor, Tensor)> {
    let n = ts.len();
    let (a, sg): (Vec<f32>, Vec<f32>) = ts.iter().map(|&t| s.alpha_sigma(t)).map(|(a, b)| (a as f32, b as f32)).unzip();
    Ok((Tensor::from_vec(a, (n, 1), &Device::Cpu)?, Tensor::from_vec(sg, (n, 1), &Device::Cpu)?))
}

/// One DDIM step of every row from `t` (coefficients `a`, `s`) to `prev` (`ap`, `sp`) given the
/// v-prediction `v` (the same arithmetic as [`crate::zoo::diffusion::sampler::ddim_step`], on tensors).
fn ddim_rows(z: &Tensor, v: &Tensor, (a, s): (&Tensor, &Tensor), (ap, sp): (&Tensor, &Tensor)) -> Result<Tensor> {
    let x0 = (z.broadcast_mul(a)? - v.broadcast_mul(s)?)?;
    let eps = (z.broadcast_mul(s)? + v.broadcast_mul(a)?)?;
    Ok((x0.broadcast_mul(ap)? + eps.broadcast_mul(sp)?)?)
}

fn ids(ts: &[isize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(ts.iter().map(|&t| t.max(0) as u32).collect::<Vec<_>>(), ts.len(), &Device::Cpu)?)
}

/// A v-predicting denoiser over rows of values, `v̂ [n, D] = f(x_t [n, D], t [n], class [n])`
/// (ids u32), that a distillation round can copy and train: the `ddpm2d`/`ldm` MLP
/// ([`Denoiser`]) and the `ddpm` UNet.
pub trait RowDenoiser: Sized {
    /// The prediction for every row.
    fn v_rows(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor>;
    /// A model with a copy of these weights (a round's student).
    fn duplicate(&self) -> Result<Self>;
    /// The trainable parameters.
    fn params(&self) -> &Params;
    /// The ONNX model (any step count) that the family's loader reads back.
    fn onnx(&self, s: &Schedule) -> Result<Vec<u8>>;
}

impl RowDenoiser for Denoiser {
    fn v_rows(&self, x: &Tensor, t: &Tensor, class: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(x, t, class)
    }

    fn duplicate(&self) -> Result<Self> {
        Denoiser::duplicate(self)
    }

    fn params(&self) -> &Params {
        Denoiser::params(self)
    }

    fn onnx(&self, s: &Schedule) -> Result<Vec<u8>> {
        self.export(s, None)
    }
}

/// The teacher's path through each student step of an `n`-step run: the timesteps of the
/// `teacher_steps` grid from the step's start down to its end (−1: clean data), both included.
/// An error when the student grid is not part of the teacher's.
pub fn teacher_paths(s: &Schedule, teacher_steps: usize, n: usize) -> Result<Vec<Vec<isize>>> {
    let teacher = s.grid(teacher_steps);
    s.steps(n)
        .into_iter()
        .map(|(t, end)| {
            let on_grid = |x: isize| x == -1 || teacher.contains(&x);
            if !on_grid(t) || !on_grid(end) {
                bail!(
                    "the {n}-step grid {:?} is not part of the {teacher_steps}-step teacher's {teacher:?}",
                    s.grid(n)
                );
            }
            Ok(std::iter::once(t).chain(teacher.iter().copied().filter(|&x| x < t && x > end)).chain([end]).collect())
        })
        .collect()
}

/// The student's v target for rows `x_t [n, D]` of class `class`, row k sitting at the start of
/// student step `rows[k]`: the teacher's DDIM steps along that step's path ([`teacher_paths`]),
/// turned into the single-step x̃ and then ṽ (module docs). Rows whose path is shorter than the
/// longest wait at their end. Detached.
pub fn distillation_target<M: RowDenoiser>(
    teacher: &M,
    s: &Schedule,
    paths: &[Vec<isize>],
    rows: &[usize],
    x_t: &Tensor,
    class: &Tensor,
) -> Result<Tensor> {
    let longest = rows.iter().map(|&i| paths[i].len()).max().unwrap_or(1);
    let at = |j: usize| -> Vec<isize> { rows.iter().map(|&i| paths[i][j.min(paths[i].len() - 1)]).collect() };
    let c0 = coefficients(s, &at(0))?;
    let (mut from, mut cf) = (at(0), c0.clone());
    let mut z = x_t.clone();
    for j in 1..longest {
        let to = at(j);
        let ct = coefficients(s, &to)?;
        let v = teacher.v_rows(&z, &ids(&from)?, class)?.detach();
        let next = ddim_rows(&z, &v, (&cf.0, &cf.1), (&ct.0, &ct.1))?;
        z = match from.iter().zip(&to).all(|(f, t)| f != t) {
            true => next,
            // Rows already at their end keep their value exactly.
            false => {
                let moving: Vec<f32> = from.iter().zip(&to).map(|(f, t)| (f != t) as u8 as f32).collect();
                let m = Tensor::from_vec(moving, (from.len(), 1), &Device::Cpu)?;
                (next.broadcast_mul(&m)? + z.broadcast_mul(&(1.0 - &m)?)?)?
            }
        };
        (from, cf) = (to, ct);
    }
    // The coefficients of the paths' ends (the start's for a path of one timestep).
    let c2 = cf;
    // x̃ = (z'' − (σ''/σ)·z) / (α'' − (σ''/σ)·α); ṽ = (α·z − x̃)/σ.
    let ratio = c2.1.div(&c0.1)?;
    let num = (z - x_t.broadcast_mul(&ratio)?)?;
    let den = (&c2.0 - ratio.mul(&c0.0)?)?;
    let x_target = num.broadcast_div(&den)?;
    Ok((x_t.broadcast_mul(&c0.0)? - x_target)?.broadcast_div(&c0.1)?.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_paths_cover_every_teacher_step_inside_a_student_step() -> Result<()> {
        let uniform = Schedule::cosine(128);
        let p = teacher_paths(&uniform, 8, 4)?;
        assert_eq!(p, [vec![127, 111, 95], vec![95, 79, 63], vec![63, 47, 31], vec![31, 15, -1]]);
        let s = Schedule::cosine(128).with_grid(&[127, 111, 87, 47])?;
        let p = teacher_paths(&s, 16, 4)?;
        assert_eq!(p[0], [127, 119, 111]);
        assert_eq!(p[2], [87, 79, 71, 63, 55, 47]);
        assert_eq!(p[3], [47, 39, 31, 23, 15, 7, -1]);
        let e = teacher_paths(&s, 8, 4).unwrap_err().to_string();
        assert!(e.contains("not part of the 8-step teacher's"), "{e}");
        Ok(())
    }
}
