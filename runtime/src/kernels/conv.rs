//! 2-D convolution and transposed convolution over `[N, C, H, W]` (the image decoders and
//! generators of the VAE/GAN families), direct loops accumulating in f32 in a fixed order.
//!
//! - `Conv`: weights `[M, C/groups, kh, kw]`, `out[n, m, y, x] = b[m] + Σ x[n, c, y·s − p + i·d, …]·w[m, c, i, j]`.
//! - `ConvTranspose`: weights `[C, M/groups, kh, kw]` (ONNX layout); every input pixel adds
//!   `x·w` at `y·s − p + i·d` of the output: the adjoint of `Conv`, which upsamples.

use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::ops::Conv;
use crate::tensor::{Desc, Out, Src};

/// Output size along one axis, or `None` when the window does not fit.
fn conv_len(input: u32, kernel: u32, stride: u8, dilation: u8, pad_sum: u32) -> Option<u32> {
    let reach = (kernel - 1) * dilation as u32 + 1;
    (input + pad_sum).checked_sub(reach).map(|v| v / stride as u32 + 1)
}

/// Validates a (transposed) convolution: `x [N, C, H, W]`, constant float weights, optional
/// bias `[M]`, the output size the ONNX formulas give (a transposed output may exceed its
/// minimum by up to `stride − 1`, ONNX's `output_padding`).
pub(crate) fn check(c: &Conv, inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 2 + c.has_bias as usize)?;
    let (x, w) = (&inputs[0], &inputs[1]);
    dtype_ok(real_in(x.dtype) && real_out(out.dtype))?;
    dtype_ok(matches!(w.dtype, crate::DType::F32 | crate::DType::F16))?;
    let ok_params = c.stride.iter().chain(&c.dilation).all(|&v| v > 0) && c.groups > 0;
    if !ok_params {
        return Err(Error::BadParams);
    }
    shape_ok(x.shape.rank() == 4 && w.shape.rank() == 4 && out.shape.rank() == 4)?;
    let [n, ch, h, wd] = dims4(x);
    let [a, b, kh, kw] = dims4(w);
    let [on, om, oh, ow] = dims4(out);
    let g = c.groups as u32;
    let (pt, pl, pb, pr) = (c.pads[0] as u32, c.pads[1] as u32, c.pads[2] as u32, c.pads[3] as u32);
    shape_ok(kh > 0 && kw > 0 && on == n && ch % g == 0 && om % g == 0)?;
    if c.transposed {
        shape_ok(a == ch && b * g == om)?;
        for (o, i, k, s, d, p) in
            [(oh, h, kh, c.stride[0], c.dilation[0], pt + pb), (ow, wd, kw, c.stride[1], c.dilation[1], pl + pr)]
        {
            let full = (i - 1) * s as u32 + (k - 1) * d as u32 + 1;
            let min = full.checked_sub(p).ok_or(Error::BadShape)?;
            shape_ok(o >= min && o < min + s as u32)?;
        }
    } else {
        shape_ok(a == om && b * g == ch)?;
        shape_ok(conv_len(h, kh, c.stride[0], c.dilation[0], pt + pb) == Some(oh))?;
        shape_ok(conv_len(wd, kw, c.stride[1], c.dilation[1], pl + pr) == Some(ow))?;
    }
    shape_ok(!c.has_bias || inputs[2].shape.dims() == [om])?;
    dtype_ok(!c.has_bias || matches!(inputs[2].dtype, crate::DType::F32 | crate::DType::F16))
}

fn dims4(d: &Desc) -> [u32; 4] {
    let s = d.shape.dims();
    [s[0], s[1], s[2], s[3]]
}

/// Runs the convolution described by `c`.
pub(crate) fn run(c: &Conv, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let w = view(inputs, 1)?;
    let bias = if c.has_bias { Some(view(inputs, 2)?) } else { None };
    let [n, ch, h, wd] = dims4(&x.desc).map(|v| v as usize);
    let [_, _, kh, kw] = dims4(&w.desc).map(|v| v as usize);
    let [_, m, oh, ow] = dims4(&out.desc).map(|v| v as usize);
    let g = c.groups as usize;
    let (cg, mg) = (ch / g, m / g);
    let (sy, sx) = (c.stride[0] as isize, c.stride[1] as isize);
    let (dy, dx) = (c.dilation[0] as isize, c.dilation[1] as isize);
    let (pt, pl) = (c.pads[0] as isize, c.pads[1] as isize);
    let b = |o: usize| bias.map_or(0.0, |b| b.get(o));
    if !c.transposed {
        for ni in 0..n {
            for o in 0..m {
                let grp = o / mg;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b(o);
                        for ci in 0..cg {
                            let cin = grp * cg + ci;
                            for i in 0..kh {
                                let iy = y as isize * sy - pt + i as isize * dy;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for j in 0..kw {
                                    let ix = xo as isize * sx - pl + j as isize * dx;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x.get(((ni * ch + cin) * h + iy as usize) * wd + ix as usize);
                                    acc += xv * w.get(((o * cg + ci) * kh + i) * kw + j);
                                }
                            }
                        }
                        out.set(((ni * m + o) * oh + y) * ow + xo, acc);
                    }
                }
            }
        }
        return Ok(());
    }
    // Transposed: gather form of the scatter, so each output is one ordered sum.
    for ni in 0..n {
        for o in 0..m {
            let grp = o / mg;
            let oc = o % mg;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b(o);
                    for ci in 0..cg {
                        let cin = grp * cg + ci;
                        for i in 0..kh {
                            let ty = y as isize + pt - i as isize * dy;
                            if ty < 0 || ty % sy != 0 || ty / sy >= h as isize {
                                continue;
                            }
                            for j in 0..kw {
                                let tx = xo as isize + pl - j as isize * dx;
                                if tx < 0 || tx % sx != 0 || tx / sx >= wd as isize {
                                    continue;
                                }
                                let xv = x.get(((ni * ch + cin) * h + (ty / sy) as usize) * wd + (tx / sx) as usize);
                                acc += xv * w.get(((cin * mg + oc) * kh + i) * kw + j);
                            }
                        }
                    }
                    out.set(((ni * m + o) * oh + y) * ow + xo, acc);
                }
            }
        }
    }
    Ok(())
}

/// Multiply-accumulates: one per (output element, weight tap it reads) for `Conv`, one per
/// (input element, weight tap it feeds) for `ConvTranspose`.
pub(crate) fn macs(c: &Conv, inputs: &[Desc], out: &Desc) -> u64 {
    let (Some(x), Some(w)) = (inputs.first(), inputs.get(1)) else { return 0 };
    let taps = w.shape.dims().iter().skip(1).map(|&d| d as u64).product::<u64>();
    let base = if c.transposed { x.shape.numel() } else { out.shape.numel() } as u64;
    base.saturating_mul(taps)
}
