//! Kernel tests: every kernel against an independent naive reference written here.

extern crate std;

mod attention;
mod attention_modes;
mod check;
mod conv;
mod elementwise;
mod fuzz;
mod gather;
mod group_norm;
mod layout;
mod matmul;
mod matmul_s8;
mod softmax_norm;
mod state_moe;

use std::vec;
use std::vec::Vec;

use super::{check, execute, Context};
use crate::error::Result;
use crate::ops::Op;
use crate::tensor::{quantize_i8, DType, Desc, Out, Quant, Shape, Src, View};

/// An owned tensor for tests.
pub(super) struct T {
    pub desc: Desc,
    pub bytes: Vec<u8>,
    pub scales: Option<Vec<u8>>,
}

pub(super) fn desc(dtype: DType, dims: &[u32]) -> Desc {
    Desc { dtype, shape: Shape::new(dims).unwrap(), quant: Quant::NONE }
}

pub(super) fn qdesc(dims: &[u32], scale: f32, zero_point: i32) -> Desc {
    Desc { dtype: DType::I8, shape: Shape::new(dims).unwrap(), quant: Quant { scale, zero_point } }
}

pub(super) fn f32t(dims: &[u32], data: &[f32]) -> T {
    let d = desc(DType::F32, dims);
    assert_eq!(d.shape.numel(), data.len());
    T { desc: d, bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(), scales: None }
}

pub(super) fn f16t(dims: &[u32], data: &[f32]) -> T {
    let d = desc(DType::F16, dims);
    let bytes = data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    T { desc: d, bytes, scales: None }
}

pub(super) fn i32t(dims: &[u32], data: &[i32]) -> T {
    let d = desc(DType::I32, dims);
    assert_eq!(d.shape.numel(), data.len());
    T { desc: d, bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(), scales: None }
}

/// Raw int8 values with the given quantisation.
pub(super) fn i8t(dims: &[u32], data: &[i8], scale: f32, zp: i32) -> T {
    let d = qdesc(dims, scale, zp);
    assert_eq!(d.shape.numel(), data.len());
    T { desc: d, bytes: data.iter().map(|&v| v as u8).collect(), scales: None }
}

/// Real values quantised to int8.
pub(super) fn quantized(dims: &[u32], data: &[f32], scale: f32, zp: i32) -> T {
    let q = Quant { scale, zero_point: zp };
    let raw: Vec<i8> = data.iter().map(|&v| quantize_i8(v, q)).collect();
    i8t(dims, &raw, scale, zp)
}

impl T {
    pub fn view(&self) -> View<'_> {
        View { desc: self.desc, bytes: &self.bytes, channel_scales: self.scales.as_deref() }
    }

    pub fn src(&self) -> Src<'_> {
        Src::View(self.view())
    }

    /// Dequantised values.
    pub fn values(&self) -> Vec<f32> {
        let v = self.view();
        (0..self.desc.shape.numel()).map(|i| v.get(i)).collect()
    }

    pub fn raw_i8(&self) -> Vec<i8> {
        self.bytes.iter().map(|&b| b as i8).collect()
    }
}

/// Checks and runs `op` out of place with an empty state.
pub(super) fn run(op: &Op, inputs: &[&T], out: Desc) -> Result<T> {
    let mut state = [0u8; 0];
    let mut ctx = Context { position: 0, state: &mut state };
    run_ctx(op, inputs, out, &mut ctx)
}

/// Checks (against `ctx.state`'s size) and runs `op` out of place.
pub(super) fn run_ctx(op: &Op, inputs: &[&T], out: Desc, ctx: &mut Context<'_>) -> Result<T> {
    let descs: Vec<Desc> = inputs.iter().map(|t| t.desc).collect();
    check(op, &descs, &out, ctx.state.len())?;
    let srcs: Vec<Src<'_>> = inputs.iter().map(|t| t.src()).collect();
    let mut bytes = vec![0xAAu8; out.byte_len()];
    execute(op, &srcs, &mut Out { desc: out, bytes: &mut bytes }, ctx)?;
    Ok(T { desc: out, bytes, scales: None })
}

/// Runs `op` with input `which` aliasing the output (in place).
pub(super) fn run_in_place(op: &Op, inputs: &[&T], which: usize, out: Desc) -> Result<T> {
    let descs: Vec<Desc> = inputs.iter().map(|t| t.desc).collect();
    check(op, &descs, &out, 0)?;
    let mut bytes = inputs[which].bytes.clone();
    let srcs: Vec<Src<'_>> =
        inputs.iter().enumerate().map(|(i, t)| if i == which { Src::InPlace(t.desc) } else { t.src() }).collect();
    let mut ctx = Context { position: 0, state: &mut [] };
    execute(op, &srcs, &mut Out { desc: out, bytes: &mut bytes }, &mut ctx)?;
    Ok(T { desc: out, bytes, scales: None })
}

/// Naive attention output of one row: `softmax(scores)`-weighted sum of `value(j, d)` over the
/// visible keys `seen`, written to `out[d]` (in f64; zero if nothing is visible).
pub(super) fn softmax_mix(seen: &[usize], scores: &[f64], value: impl Fn(usize, usize) -> f64, out: &mut [f64]) {
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = scores.iter().map(|x| (x - max).exp()).sum();
    for (d, y) in out.iter_mut().enumerate() {
        *y = seen.iter().zip(scores).map(|(&j, x)| (x - max).exp() / total * value(j, d)).sum();
    }
}

/// Deterministic xorshift generator.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
}

/// `|got - want| <= abs + rel * |want|` element-wise.
#[track_caller]
pub(super) fn assert_close(got: &[f32], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= abs + rel * w.abs(), "element {i}: got {g}, want {w} (err {err})");
    }
}

/// Row-major multi-index of linear index `i` in `dims`.
pub(super) fn unravel(mut i: usize, dims: &[u32]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for ax in (0..dims.len()).rev() {
        idx[ax] = i % dims[ax] as usize;
        i /= dims[ax] as usize;
    }
    idx
}

/// Linear index of a multi-index in `dims`.
pub(super) fn ravel(idx: &[usize], dims: &[u32]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d as usize + i)
}
