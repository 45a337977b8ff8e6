//! Encodes constant tensors for the file: f32, f16, or int8 (per-channel symmetric).

use mote::quant::quantize_multiplier;
use mote::{DType, Desc, Quant, Shape};

/// A weight tensor ready for the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Dtype, shape, per-tensor quantisation.
    pub desc: Desc,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
    /// Per-channel scales along an axis.
    pub channel_scales: Option<(u8, Vec<f32>)>,
}

fn shape(dims: &[usize]) -> Shape {
    let d: Vec<u32> = dims.iter().map(|&x| x as u32).collect();
    Shape::new(&d).expect("rank checked at import")
}

/// f32 weights.
pub fn f32s(dims: &[usize], v: &[f32]) -> Encoded {
    Encoded {
        desc: Desc { dtype: DType::F32, shape: shape(dims), quant: Quant::NONE },
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        channel_scales: None,
    }
}

/// f16 weights.
pub fn f16s(dims: &[usize], v: &[f32]) -> Encoded {
    Encoded {
        desc: Desc { dtype: DType::F16, shape: shape(dims), quant: Quant::NONE },
        bytes: v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        channel_scales: None,
    }
}

/// i32 values (indices, biases, requantisation tables).
pub fn i32s(dims: &[usize], v: &[i32]) -> Encoded {
    Encoded {
        desc: Desc { dtype: DType::I32, shape: shape(dims), quant: Quant::NONE },
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        channel_scales: None,
    }
}

fn symmetric_scale(v: &[f32]) -> f32 {
    let m = v.iter().fold(0f32, |a, x| a.max(x.abs()));
    if m > 0.0 {
        m / 127.0
    } else {
        1.0
    }
}

fn q8(x: f32, s: f32) -> u8 {
    (x / s).round().clamp(-127.0, 127.0) as i8 as u8
}

/// int8 weights `[N, K]`, one symmetric scale per output row.
pub fn i8_per_channel(dims: &[usize], v: &[f32]) -> Encoded {
    let (n, k) = (dims[0], dims[1..].iter().product::<usize>());
    let scales: Vec<f32> = (0..n).map(|c| symmetric_scale(&v[c * k..(c + 1) * k])).collect();
    let bytes = (0..n * k).map(|i| q8(v[i], scales[i / k.max(1)])).collect();
    Encoded {
        desc: Desc { dtype: DType::I8, shape: shape(dims), quant: Quant { scale: 1.0, zero_point: 0 } },
        bytes,
        channel_scales: Some((0, scales)),
    }
}

/// int8 with one symmetric scale (embedding tables).
pub fn i8_per_tensor(dims: &[usize], v: &[f32]) -> Encoded {
    let s = symmetric_scale(v);
    Encoded {
        desc: Desc { dtype: DType::I8, shape: shape(dims), quant: Quant { scale: s, zero_point: 0 } },
        bytes: v.iter().map(|&x| q8(x, s)).collect(),
        channel_scales: None,
    }
}

/// int32 bias for an int8 MatMul: `round(b / (s_in * s_w[c]))`.
pub fn int8_bias(bias: &[f32], s_in: f32, w_scales: &[f32]) -> Encoded {
    let q: Vec<i32> = bias
        .iter()
        .zip(w_scales)
        .map(|(b, sw)| (*b as f64 / (s_in as f64 * *sw as f64)).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
        .collect();
    i32s(&[q.len()], &q)
}

/// Requantisation table `[N, 2]` of (multiplier, shift) for `s_in * s_w[c] / s_out`.
pub fn requant_table(s_in: f32, w_scales: &[f32], s_out: f32) -> Encoded {
    let mut t = Vec::with_capacity(2 * w_scales.len());
    for sw in w_scales {
        let (m, s) = quantize_multiplier(s_in as f64 * *sw as f64 / s_out as f64);
        t.extend([m, s]);
    }
    i32s(&[w_scales.len(), 2], &t)
}
