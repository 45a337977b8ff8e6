//! The UNet's training convolution: im2col + one GEMM forward (bias added while the result is
//! laid out), and a backward that reuses the forward's patch matrix (weight gradient: one GEMM)
//! and scatters the patch gradient back (col2im) for the input gradient, as a candle custom
//! op; and nearest ×2 upsampling with a one-pass backward.
//!
//! candle's CPU convolution gathers its patches one element at a time and differentiates the
//! input through a direct `conv_transpose2d` loop; at the UNet's small widths those two were
//! most of a training step. Here the patches are copied row by row, all images of the batch go
//! through one GEMM (`[Cₒ, Cᵢ·k²] × [Cᵢ·k², N·Hₒ·Wₒ]`), and the weight gradient needs no second
//! im2col. The function is the ONNX `Conv` the layer exports; the tests compare values and
//! gradients with candle's `conv2d`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mote_converters::zoo::unet::im2col::conv2d;
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &Device::Cpu)?;
//! let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &Device::Cpu)?;
//! let b = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu)?;
//! let y = conv2d(&x, &w, &b, 2, 1)?;
//! let want = x.conv2d(&w, 1, 2, 1, 1)?;
//! let d = (y - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
//! assert!(d < 1e-4);
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor};

use super::fused::data;

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &[usize], wt: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, w], &[_, ci, k, kw]) = (x, wt) else {
            candle_core::bail!("conv2d: input {x:?}, kernel {wt:?} (need 4-D)")
        };
        if ci != c || k != kw || k == 0 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!("conv2d: input {x:?}, kernel {wt:?}, stride {stride}, padding {pad}");
        }
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        Ok(Self { n, c, h, w, k, stride, pad, ho, wo })
    }

    /// Rows of the patch matrix (`Cᵢ·k²`).
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Columns of the patch matrix (`N·Hₒ·Wₒ`).
    fn cols(&self) -> usize {
        self.n * self.ho * self.wo
    }

    /// The output columns `ox` whose input column `ox·stride + kx − pad` lies inside the
    /// image, and that input column for the first of them (`None` if there are none).
    fn span(&self, kx: usize) -> Option<(std::ops::Range<usize>, usize)> {
        let first = (self.pad.saturating_sub(kx)).div_ceil(self.stride);
        let end = (self.w + self.pad).checked_sub(kx + 1)? / self.stride + 1;
        let last = end.min(self.wo);
        (first < last).then(|| (first..last, first * self.stride + kx - self.pad))
    }

    /// Calls `f(column index, input index, count, input step)` for every run of patch-matrix
    /// entries of row `(ci, ky, kx)` that reads the image (the rest are zero padding).
    fn runs(&self, ci: usize, ky: usize, kx: usize, mut f: impl FnMut(usize, usize, usize)) {
        let Some((range, ix0)) = self.span(kx) else { return };
        for b in 0..self.n {
            for oy in 0..self.ho {
                let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                if iy < 0 || iy >= self.h as isize {
                    continue;
                }
                let col = (b * self.ho + oy) * self.wo + range.start;
                let inp = ((b * self.c + ci) * self.h + iy as usize) * self.w + ix0;
                f(col, inp, range.len());
            }
        }
    }
}

/// The patch matrix `[Cᵢ·k², N·Hₒ·Wₒ]` of `x`.
fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let cols = g.cols();
    let mut out = vec![0f32; g.rows() * cols];
    for ci in 0..g.c {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &mut out[((ci * g.k + ky) * g.k + kx) * cols..][..cols];
                g.runs(ci, ky, kx, |col, inp, len| {
                    if g.stride == 1 {
                        row[col..col + len].copy_from_slice(&x[inp..inp + len]);
                    } else {
                        for (j, v) in row[col..col + len].iter_mut().enumerate() {
                            *v = x[inp + j * g.stride];
                        }
                    }
                });
            }
        }
    }
    out
}

/// The input gradient `[N, Cᵢ, H, W]` from the patch-matrix gradient (the adjoint of
/// [`im2col`]: every entry added back to the pixel it was copied from).
fn col2im(dcol: &[f32], g: &Geometry) -> Vec<f32> {
    let cols = g.cols();
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    for ci in 0..g.c {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let row = &dcol[((ci * g.k + ky) * g.k + kx) * cols..][..cols];
                g.runs(ci, ky, kx, |col, inp, len| {
                    for (j, v) in row[col..col + len].iter().enumerate() {
                        dx[inp + j * g.stride] += v;
                    }
                });
            }
        }
    }
    dx
}

/// Runs `f` on the contiguous f32 data of a CPU tensor without copying it.
pub(crate) fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(data(cpu, layout, "tensor data")?),
        _ => candle_core::bail!("conv2d: CPU tensors only"),
    }
}

/// The convolution op (`x`, `w`, bias); keeps the forward's patch matrix for the backward.
struct ConvOp {
    stride: usize,
    pad: usize,
    patches: Mutex<Option<Tensor>>,
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "unet-conv2d"
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
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let co = l2.dims()[0];
        let bias = data(s3, l3, "conv2d")?;
        if bias.len() != co {
            candle_core::bail!("conv2d: {} bias values for {co} output channels", bias.len());
        }
        let col = Tensor::from_vec(im2col(data(s1, l1, "conv2d")?, &g), (g.rows(), g.cols()), &Device::Cpu)?;
        let w = Tensor::from_slice(data(s2, l2, "conv2d")?, (co, g.rows()), &Device::Cpu)?;
        let p = g.ho * g.wo;
        let mut y = vec![0f32; co * g.cols()];
        with_data(&w.matmul(&col)?, |m| {
            // [Cₒ, N·P] → [N, Cₒ, P], adding the bias.
            for (ch, &b0) in bias.iter().enumerate() {
                for b in 0..g.n {
                    let (src, dst) = (&m[ch * g.cols() + b * p..][..p], &mut y[(b * co + ch) * p..][..p]);
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v + b0;
                    }
                }
            }
            Ok(())
        })?;
        if let Ok(mut slot) = self.patches.lock() {
            *slot = Some(col);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, co, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let co = w.dim(0)?;
        let col = match self.patches.lock().ok().and_then(|s| s.clone()) {
            Some(c) => c,
            None => with_data(x, |xv| Tensor::from_vec(im2col(xv, &g), (g.rows(), g.cols()), &Device::Cpu))?,
        };
        // [N, Cₒ, P] → [Cₒ, N·P], and the bias gradient (row sums).
        let p = g.ho * g.wo;
        let mut gm = vec![0f32; co * g.cols()];
        let mut db = vec![0f32; co];
        with_data(grad, |gv| {
            for b in 0..g.n {
                for ch in 0..co {
                    let src = &gv[(b * co + ch) * p..][..p];
                    gm[ch * g.cols() + b * p..][..p].copy_from_slice(src);
                    db[ch] += src.iter().sum::<f32>();
                }
            }
            Ok(())
        })?;
        let gm = Tensor::from_vec(gm, (co, g.cols()), &Device::Cpu)?;
        let dw = gm.matmul(&col.t()?)?.reshape(w.dims())?;
        let wm = w.detach().reshape((co, g.rows()))?;
        let dx = with_data(&wm.t()?.matmul(&gm)?, |dcol| Tensor::from_vec(col2im(dcol, &g), x.dims(), &Device::Cpu))?;
        Ok((Some(dx), Some(dw), Some(Tensor::from_vec(db, co, &Device::Cpu)?)))
    }
}

/// A convolution with bias (square `stride`, symmetric `pad`, one group) of
/// `x [N, Cᵢ, H, W]` with `w [Cₒ, Cᵢ, k, k]` and `bias [Cₒ]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let op = ConvOp { stride, pad, patches: Mutex::new(None) };
    x.contiguous()?.apply_op3(&w.contiguous()?, &bias.contiguous()?, op)
}

/// Nearest-neighbour ×2 upsampling of `[N, C, H, W]` (each pixel repeated in a 2×2 block);
/// the backward sums each block.
struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "unet-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else { candle_core::bail!("upsample2x of {:?}", l.dims()) };
        let x = data(s, l, "conv2d")?;
        let mut y = vec![0f32; 4 * x.len()];
        for plane in 0..n * c {
            for i in 0..h {
                let src = &x[(plane * h + i) * w..][..w];
                for r in 0..2 {
                    let dst = &mut y[((plane * 2 * h) + 2 * i + r) * 2 * w..][..2 * w];
                    for (j, &v) in src.iter().enumerate() {
                        dst[2 * j] = v;
                        dst[2 * j + 1] = v;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let dx = with_data(grad, |gv| {
            let mut dx = vec![0f32; n * c * h * w];
            for plane in 0..n * c {
                for i in 0..2 * h {
                    let src = &gv[(plane * 2 * h + i) * 2 * w..][..2 * w];
                    let dst = &mut dx[(plane * h + i / 2) * w..][..w];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d += src[2 * j] + src[2 * j + 1];
                    }
                }
            }
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, (n, c, h, w), &Device::Cpu)?))
    }
}

/// Nearest-neighbour ×2 upsampling of `[N, C, H, W]` with a one-pass backward.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Upsample2x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn values_and_gradients_match_candles_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (h, k, stride, pad) in [(6, 3, 1, 1), (8, 3, 2, 1), (7, 3, 2, 1), (5, 1, 1, 0), (4, 3, 1, 0)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, h, h), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.5, (4, 3, k, k), &dev)?)?;
            let bias = Var::from_tensor(&Tensor::randn(0f32, 0.5, 4, &dev)?)?;
            let ours = conv2d(x.as_tensor(), w.as_tensor(), bias.as_tensor(), stride, pad)?;
            let theirs = x
                .as_tensor()
                .conv2d(w.as_tensor(), pad, stride, 1, 1)?
                .broadcast_add(&bias.as_tensor().reshape((1, 4, 1, 1))?)?;
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_diff(&ours, &theirs) < 1e-5, "h {h} k {k} stride {stride}");
            let weights = Tensor::randn(0f32, 1.0, theirs.dims(), &dev)?;
            let (a, b) = ((ours * &weights)?.sum_all()?.backward()?, (theirs * &weights)?.sum_all()?.backward()?);
            for v in [&x, &w, &bias] {
                let (ga, gb) = (a.get(v.as_tensor()).expect("grad"), b.get(v.as_tensor()).expect("grad"));
                assert!(max_diff(ga, gb) < 1e-4, "h {h} k {k} stride {stride}: {ga} vs {gb}");
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 2, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, &b, 1, 1).is_err());
        assert!(upsample2x(&b).is_err());
    }
}
