//! Fused training kernels for the UNet's two most frequent ops, SiLU and GroupNorm, as candle
//! custom ops with hand-written backward passes.
//!
//! Composed from candle's elementwise ops, a group norm is about ten passes over the tensor
//! forward and twenty backward (each allocating), and `silu`'s backward another eight; on the
//! UNet they were two thirds of a training step. Here each is one pass forward and one or two
//! backward (statistics in f64 per group). They compute the same functions as the exported ONNX
//! (`GroupNormalization`, `Sigmoid`·`Mul`); the tests check the values against the composed
//! ops and the gradients against finite differences.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::unet::fused::silu;
//! let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
//! let y: Vec<f32> = silu(&x)?.to_vec1()?;
//! assert!((y[2] - 2.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
//! # Ok::<(), anyhow::Error>(())
//! ```

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The contiguous f32 data of a custom op's operand (`what` names the op in the error).
pub(super) fn data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let all = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&all[a..b]),
        None => candle_core::bail!("{what}: operand must be contiguous"),
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// SiLU `x·σ(x)`.
struct Silu;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "unet-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, self.name())?;
        Ok((CpuStorage::F32(x.iter().map(|&v| v * sigmoid(v)).collect()), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?))
    }
}

/// `dy · σ(x)·(1 + x·(1 − σ(x)))`.
struct SiluGrad;

impl CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "unet-silu-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?);
        let dx = x
            .iter()
            .zip(dy)
            .map(|(&x, &g)| {
                let s = sigmoid(x);
                g * s * (1.0 + x * (1.0 - s))
            })
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// SiLU with a one-pass backward.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Silu)
}

/// Group geometry of `[N, C, ...]`: (N, C, elements per channel).
fn geometry(l: &Layout, groups: usize) -> Result<(usize, usize, usize)> {
    let dims = l.dims();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        candle_core::bail!("group norm of {dims:?} in {groups} groups");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// Mean and 1/√(var + eps) of one group's values.
fn stats(v: &[f32], eps: f32) -> (f32, f32) {
    let m = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / m;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / m;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// Calls `f(n, c, channel values, mean, inv_std)` for every channel of every group.
fn per_channel(
    x: &[f32],
    (n, c, l): (usize, usize, usize),
    groups: usize,
    eps: f32,
    mut f: impl FnMut(usize, usize, std::ops::Range<usize>, f32, f32),
) {
    let cpg = c / groups;
    for b in 0..n {
        for g in 0..groups {
            let start = (b * c + g * cpg) * l;
            let (mean, inv) = stats(&x[start..start + cpg * l], eps);
            for k in 0..cpg {
                let ch = g * cpg + k;
                let at = (b * c + ch) * l;
                f(b, ch, at..at + l, mean, inv);
            }
        }
    }
}

/// `GroupNorm(x, γ, β)`.
struct GroupNormOp {
    groups: usize,
    eps: f32,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "unet-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (data(s1, l1, self.name())?, data(s2, l2, self.name())?, data(s3, l3, self.name())?);
        let geo = geometry(l1, self.groups)?;
        if gamma.len() != geo.1 || beta.len() != geo.1 {
            candle_core::bail!("group norm: {} channels, γ {} β {}", geo.1, gamma.len(), beta.len());
        }
        let mut y = vec![0f32; x.len()];
        per_channel(x, geo, self.groups, self.eps, |_, ch, r, mean, inv| {
            let (a, b) = (inv * gamma[ch], beta[ch]);
            for i in r {
                y[i] = (x[i] - mean) * a + b;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, grad) = (x.contiguous()?, grad.contiguous()?);
        let op = GroupNormGrad { groups: self.groups, eps: self.eps };
        let dx = x.apply_op3_no_bwd(&gamma.contiguous()?, &grad, &op)?;
        let affine = x.apply_op2_no_bwd(&grad, &op)?;
        Ok((Some(dx), Some(affine.get(0)?), Some(affine.get(1)?)))
    }
}

/// The backward of [`GroupNormOp`]: `dx` (as a 3-operand op on x, γ, dy) and `[dγ; dβ]`
/// (as a 2-operand op on x, dy).
struct GroupNormGrad {
    groups: usize,
    eps: f32,
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "unet-group-norm-grad-x"
    }

    /// With x̂ = (x − μ)·s and g = dy·γ per channel:
    /// `dx = s·(g − mean(g) − x̂·mean(g·x̂))`, means over the group.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp3::name(self);
        let (x, gamma, dy) = (data(s1, l1, name)?, data(s2, l2, name)?, data(s3, l3, name)?);
        let (n, c, l) = geometry(l1, self.groups)?;
        let cpg = c / self.groups;
        let mut dx = vec![0f32; x.len()];
        for b in 0..n {
            for g in 0..self.groups {
                let start = (b * c + g * cpg) * l;
                let r = start..start + cpg * l;
                let (mean, inv) = stats(&x[r.clone()], self.eps);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for i in r.clone() {
                    let gi = dy[i] * gamma[(i / l) % c];
                    sg += gi as f64;
                    sgx += (gi * (x[i] - mean) * inv) as f64;
                }
                let m = (cpg * l) as f64;
                let (mg, mgx) = ((sg / m) as f32, (sgx / m) as f32);
                for i in r {
                    let gi = dy[i] * gamma[(i / l) % c];
                    let xh = (x[i] - mean) * inv;
                    dx[i] = inv * (gi - mg - xh * mgx);
                }
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

impl CustomOp2 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "unet-group-norm-grad-affine"
    }

    /// `[2, C]`: dγ_c = Σ dy·x̂ and dβ_c = Σ dy over the batch and the channel's positions.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (data(s1, l1, CustomOp2::name(self))?, data(s2, l2, CustomOp2::name(self))?);
        let geo = geometry(l1, self.groups)?;
        let c = geo.1;
        let (mut dg, mut db) = (vec![0f64; c], vec![0f64; c]);
        per_channel(x, geo, self.groups, self.eps, |_, ch, r, mean, inv| {
            for i in r {
                dg[ch] += (dy[i] * (x[i] - mean) * inv) as f64;
                db[ch] += dy[i] as f64;
            }
        });
        let out: Vec<f32> = dg.iter().chain(&db).map(|&v| v as f32).collect();
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// Group normalisation of `x [N, C, ...]` in `groups` groups with per-channel `γ`, `β` `[C]`.
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, GroupNormOp { groups, eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The composed-op group norm (the reference).
    fn reference(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let g = x.reshape((n, groups, (c / groups) * h * w))?;
        let d = g.broadcast_sub(&g.mean_keepdim(D::Minus1)?)?;
        let var = d.sqr()?.mean_keepdim(D::Minus1)?;
        let y = d.broadcast_div(&(var + eps)?.sqrt()?)?.reshape((n, c, h, w))?;
        y.broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?.broadcast_add(&beta.reshape((1, c, 1, 1))?)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_ops_match_the_composed_ops_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.5, (2, 6, 3, 4), &dev)? + 0.7)?)?;
        let gamma = Var::from_tensor(&Tensor::randn(1f32, 0.3, 6, &dev)?)?;
        let beta = Var::from_tensor(&Tensor::randn(0f32, 0.3, 6, &dev)?)?;
        let weights = Tensor::randn(0f32, 1.0, (2, 6, 3, 4), &dev)?;
        let loss = |y: Tensor| (y * &weights).unwrap().sum_all().unwrap();
        let fused = group_norm(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 3, 1e-5)?;
        let composed = reference(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 3, 1e-5)?;
        assert!(max_diff(&fused, &composed) < 1e-5);
        let (gf, gc) = (loss(silu(&fused)?).backward()?, loss(composed.silu()?).backward()?);
        for v in [&x, &gamma, &beta] {
            let (a, b) = (gf.get(v.as_tensor()).expect("fused grad"), gc.get(v.as_tensor()).expect("grad"));
            assert!(max_diff(a, b) < 1e-4, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x0: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.4).collect();
        let gamma = Tensor::new(&[1.2f32, -0.5, 0.8, 1.0], &dev)?;
        let beta = Tensor::new(&[0.1f32, 0.2, -0.3, 0.0], &dev)?;
        let f = |x: &[f32]| -> f64 {
            let t = Tensor::from_vec(x.to_vec(), (1, 4, 2, 3), &dev).unwrap();
            let y = silu(&group_norm(&t, &gamma, &beta, 2, 1e-5).unwrap()).unwrap();
            let w = Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((1, 4, 2, 3)).unwrap();
            (y * w).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let xv = Var::from_tensor(&Tensor::from_vec(x0.clone(), (1, 4, 2, 3), &dev)?)?;
        let y = silu(&group_norm(xv.as_tensor(), &gamma, &beta, 2, 1e-5)?)?;
        let w = Tensor::arange(0f32, 24.0, &dev)?.reshape((1, 4, 2, 3))?;
        let g: Vec<f32> =
            (y * w)?.sum_all()?.backward()?.get(xv.as_tensor()).expect("grad").flatten_all()?.to_vec1()?;
        for i in 0..24 {
            let (mut a, mut b) = (x0.clone(), x0.clone());
            a[i] += 1e-2;
            b[i] -= 1e-2;
            let fd = (f(&a) - f(&b)) / 2e-2;
            assert!((fd - g[i] as f64).abs() < 2e-2 * (1.0 + fd.abs()), "{i}: {fd} vs {}", g[i]);
        }
        Ok(())
    }
}
