//! 2-D convolution and transposed convolution over `[N, C, H, W]` (the image decoders and
//! generators of the VAE/GAN families), direct loops accumulating in f32 in a fixed order.
//!
//! - `Conv`: weights `[M, C/groups, kh, kw]`, `out[n, m, y, x] = b[m] + Σ x[n, c, y·s − p + i·d, …]·w[m, c, i, j]`.
//! - `ConvTranspose`: weights `[C, M/groups, kh, kw]` (ONNX layout); every input pixel adds
//!   `x·w` at `y·s − p + i·d` of the output: the adjoint of `Conv`, which upsamples.

use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::ops::Conv;
use crate::tensor::{DType, Desc, Out, Src, View};

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

/// Output pixels accumulated at once (an f32 tile on the stack).
const TILE: usize = 256;

/// The outputs along one axis that tap `k` reaches from the input, within `[lo, hi)`: `count`
/// outputs from `first` every `step`, reading the input from `input` every `input_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: usize,
    step: usize,
    count: usize,
    input: usize,
    input_step: usize,
}

/// [`Span`] of tap `k` along `axis` (0: rows, 1: columns) for an input of `len` positions.
/// `Conv` reads input `v·s − p + k·d` for output `v`; `ConvTranspose` (gather form) reads
/// input `(v + p − k·d)/s` when that divides exactly.
fn span(c: &Conv, axis: usize, k: usize, lo: usize, hi: usize, len: usize) -> Option<Span> {
    let (s, d, p) = (c.stride[axis] as isize, c.dilation[axis] as isize, c.pads[axis] as isize);
    let (lo, hi, len, k) = (lo as isize, hi as isize, len as isize, k as isize);
    let (first, count, input, step, input_step) = if c.transposed {
        let off = p - k * d;
        let mut v = lo.max(-off);
        let r = (v + off).rem_euclid(s);
        if r != 0 {
            v += s - r;
        }
        let u = (v + off) / s;
        let count = (len - u).min((hi - v + s - 1).div_euclid(s));
        (v, count, u, s, 1)
    } else {
        let off = k * d - p;
        let v = lo.max((-off + s - 1).div_euclid(s));
        let end = hi.min((len - 1 - off).div_euclid(s) + 1);
        (v, end - v, v * s + off, 1, s)
    };
    (count > 0).then_some(Span {
        first: first as usize,
        step: step as usize,
        count: count as usize,
        input: input as usize,
        input_step: input_step as usize,
    })
}

/// `acc[a·acc_step] += x[start + a·step] · w` for `a < count`, with `x` read by a loop
/// specialised to its dtype (the same values [`View::get`] returns).
fn accumulate(x: &View<'_>, start: usize, step: usize, count: usize, w: f32, acc: &mut [f32], acc_step: usize) {
    if step == 1 && acc_step == 1 {
        return accumulate_contiguous(x, start, w, &mut acc[..count]);
    }
    let outs = acc.iter_mut().step_by(acc_step).take(count);
    match x.desc.dtype {
        DType::F32 => {
            for (a, i) in outs.zip((start..).step_by(step)) {
                let b = &x.bytes[4 * i..4 * i + 4];
                *a += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * w;
            }
        }
        DType::I8 => {
            let (zero, scale) = (x.desc.quant.zero_point, x.desc.quant.scale);
            for (a, i) in outs.zip((start..).step_by(step)) {
                *a += (x.bytes[i] as i8 as i32 - zero) as f32 * scale * w;
            }
        }
        _ => {
            for (a, i) in outs.zip((start..).step_by(step)) {
                *a += x.get(i) * w;
            }
        }
    }
}

/// [`accumulate`] over consecutive inputs and outputs (stride-1 rows): slices, no index maths.
fn accumulate_contiguous(x: &View<'_>, start: usize, w: f32, acc: &mut [f32]) {
    let n = acc.len();
    match x.desc.dtype {
        DType::F32 => {
            for (a, b) in acc.iter_mut().zip(x.bytes[4 * start..4 * (start + n)].chunks_exact(4)) {
                *a += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * w;
            }
        }
        DType::I8 => {
            let (zero, scale) = (x.desc.quant.zero_point, x.desc.quant.scale);
            for (a, &q) in acc.iter_mut().zip(&x.bytes[start..start + n]) {
                *a += (q as i8 as i32 - zero) as f32 * scale * w;
            }
        }
        _ => {
            for (k, a) in acc.iter_mut().enumerate() {
                *a += x.get(start + k) * w;
            }
        }
    }
}

/// Runs the convolution described by `c`.
///
/// Every output is one f32 sum in a fixed order: the bias, then each tap it reaches (input
/// channel, kernel row, kernel column) in order, as in the direct loop nest
/// `for ci { for i { for j { acc += x·w } } }`. The loops run tap by tap over a tile of
/// outputs, so each weight is decoded once per tile and the input is read along rows by a
/// loop specialised to its dtype; each output's sum, and so every bit of the result, is that
/// of the direct loops (`kernels::tests::conv` checks it).
pub(crate) fn run(c: &Conv, inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let w = view(inputs, 1)?;
    let bias = if c.has_bias { Some(view(inputs, 2)?) } else { None };
    let [n, ch, h, wd] = dims4(&x.desc).map(|v| v as usize);
    let [_, _, kh, kw] = dims4(&w.desc).map(|v| v as usize);
    let [_, m, oh, ow] = dims4(&out.desc).map(|v| v as usize);
    let g = c.groups as usize;
    let (cg, mg) = (ch / g, m / g);
    let cols = ow.clamp(1, TILE);
    let rows = (TILE / cols).max(1);
    let mut tile = [0f32; TILE];
    for ni in 0..n {
        for o in 0..m {
            let (grp, oc) = (o / mg, o % mg);
            for y0 in (0..oh).step_by(rows) {
                let y1 = (y0 + rows).min(oh);
                for x0 in (0..ow).step_by(cols) {
                    let x1 = (x0 + cols).min(ow);
                    let width = x1 - x0;
                    let acc = &mut tile[..(y1 - y0) * width];
                    acc.fill(bias.map_or(0.0, |b| b.get(o)));
                    for ci in 0..cg {
                        let cin = grp * cg + ci;
                        let plane = (ni * ch + cin) * h * wd;
                        let taps = if c.transposed { (cin * mg + oc) * kh } else { (o * cg + ci) * kh };
                        for i in 0..kh {
                            let Some(rs) = span(c, 0, i, y0, y1, h) else { continue };
                            for j in 0..kw {
                                let Some(cs) = span(c, 1, j, x0, x1, wd) else { continue };
                                let wv = w.get((taps + i) * kw + j);
                                for r in 0..rs.count {
                                    let (y, iy) = (rs.first + r * rs.step, rs.input + r * rs.input_step);
                                    let row = &mut acc[(y - y0) * width + cs.first - x0..(y - y0 + 1) * width];
                                    let start = plane + iy * wd + cs.input;
                                    accumulate(x, start, cs.input_step, cs.count, wv, row, cs.step);
                                }
                            }
                        }
                    }
                    for y in y0..y1 {
                        for (xo, &v) in (x0..x1).zip(&acc[(y - y0) * width..]) {
                            out.set(((ni * m + o) * oh + y) * ow + xo, v);
                        }
                    }
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
