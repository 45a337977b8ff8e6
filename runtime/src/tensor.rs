//! Tensor descriptions and byte views with dequantising loads and quantising stores.
//!
//! Kernels never see raw pointers: they read and write little-endian bytes through
//! [`View`] and [`Out`], which know each tensor's dtype, shape and quantisation.

use crate::error::{Error, Result};

/// The highest tensor rank the format stores.
pub const MAX_RANK: usize = 6;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum DType {
    /// IEEE-754 binary32.
    F32 = 0,
    /// IEEE-754 binary16 (weights only).
    F16 = 1,
    /// Signed 8-bit integer, affine-quantised (`real = scale * (q - zero_point)`).
    I8 = 2,
    /// Signed 32-bit integer (indices, biases, requantisation tables).
    I32 = 3,
}

impl DType {
    /// Decodes the on-disk tag.
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::I8,
            3 => DType::I32,
            _ => return Err(Error::BadEnum),
        })
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }

    /// Short lowercase name (`f32`, `i8`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::I32 => "i32",
        }
    }
}

/// A fixed-capacity shape: no allocation, rank at most [`MAX_RANK`].
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    dims: [u32; MAX_RANK],
    rank: u8,
}

impl Shape {
    /// Builds a shape; fails if the rank exceeds [`MAX_RANK`].
    ///
    /// ```
    /// let s = mote::Shape::new(&[2, 3]).unwrap();
    /// assert_eq!(s.numel(), 6);
    /// ```
    pub fn new(dims: &[u32]) -> Result<Self> {
        if dims.len() > MAX_RANK {
            return Err(Error::BadShape);
        }
        let mut d = [0u32; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Shape { dims: d, rank: dims.len() as u8 })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.rank as usize]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Dimension `i` (counting from the front), or 1 past the rank.
    pub fn dim(&self, i: usize) -> usize {
        if i < self.rank() {
            self.dims[i] as usize
        } else {
            1
        }
    }

    /// The last dimension (1 for scalars).
    pub fn last(&self) -> usize {
        if self.rank == 0 {
            1
        } else {
            self.dims[self.rank as usize - 1] as usize
        }
    }

    /// Number of elements, saturating instead of overflowing (validation rejects huge shapes).
    pub fn numel(&self) -> usize {
        self.dims().iter().fold(1usize, |acc, &d| acc.saturating_mul(d as usize))
    }
}

impl core::fmt::Debug for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.dims()).finish()
    }
}

/// Per-tensor affine quantisation: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Quant {
    /// Step between adjacent integer levels.
    pub scale: f32,
    /// Integer that represents real zero.
    pub zero_point: i32,
}

impl Quant {
    /// The identity quantisation used by non-quantised tensors.
    pub const NONE: Quant = Quant { scale: 1.0, zero_point: 0 };
}

/// What a kernel knows about a tensor besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Desc {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
    /// Per-tensor quantisation (only meaningful for `I8`).
    pub quant: Quant,
}

impl Desc {
    /// Bytes the tensor occupies.
    pub fn byte_len(&self) -> usize {
        self.shape.numel().saturating_mul(self.dtype.size())
    }
}

/// Reads element `i` of a tensor stored as `dtype` in `bytes`, as a real number.
///
/// The caller guarantees `i < numel` (validated at parse time).
#[inline]
pub fn load(bytes: &[u8], desc: &Desc, i: usize) -> f32 {
    match desc.dtype {
        DType::F32 => {
            let b = &bytes[4 * i..4 * i + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        DType::F16 => {
            let b = &bytes[2 * i..2 * i + 2];
            half::f16::from_le_bytes([b[0], b[1]]).to_f32()
        }
        DType::I8 => {
            let q = bytes[i] as i8 as i32;
            (q - desc.quant.zero_point) as f32 * desc.quant.scale
        }
        DType::I32 => load_i32(bytes, i) as f32,
    }
}

/// Reads element `i` of an `i32` tensor.
#[inline]
pub fn load_i32(bytes: &[u8], i: usize) -> i32 {
    let b = &bytes[4 * i..4 * i + 4];
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Quantises a real value to int8 with round-half-away-from-zero and saturation.
#[inline]
pub fn quantize_i8(v: f32, q: Quant) -> i8 {
    let r = libm::roundf(v / q.scale) + q.zero_point as f32;
    // `as` saturates and maps NaN to 0, so this never panics.
    r.clamp(-128.0, 127.0) as i8
}

/// Writes element `i` of a tensor stored as `desc.dtype`, quantising if needed.
#[inline]
pub fn store(bytes: &mut [u8], desc: &Desc, i: usize, v: f32) {
    match desc.dtype {
        DType::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
        DType::F16 => bytes[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
        DType::I8 => bytes[i] = quantize_i8(v, desc.quant) as u8,
        DType::I32 => bytes[4 * i..4 * i + 4].copy_from_slice(&(v as i32).to_le_bytes()),
    }
}

/// A read-only tensor: its description plus its bytes (in the arena or in the weights).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// Dtype, shape and quantisation.
    pub desc: Desc,
    /// Exactly `desc.byte_len()` bytes.
    pub bytes: &'a [u8],
    /// Per-channel scales (f32 little-endian) for weights quantised per output channel.
    pub channel_scales: Option<&'a [u8]>,
}

impl View<'_> {
    /// Element `i` as a real number.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        load(self.bytes, &self.desc, i)
    }

    /// Per-channel scale `c` (falls back to the per-tensor scale).
    #[inline]
    pub fn channel_scale(&self, c: usize) -> f32 {
        match self.channel_scales {
            Some(s) => f32::from_le_bytes([s[4 * c], s[4 * c + 1], s[4 * c + 2], s[4 * c + 3]]),
            None => self.desc.quant.scale,
        }
    }
}

/// An op input: either a separate tensor or the op's own output buffer (the op runs in place).
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// A tensor that does not overlap the output.
    View(View<'a>),
    /// The input occupies exactly the output's bytes; described by its own `Desc`.
    /// Only element-wise ops accept this (validated at parse time): they read
    /// element `i` before writing element `i`.
    InPlace(Desc),
}

impl<'a> Src<'a> {
    /// The input's description.
    pub fn desc(&self) -> &Desc {
        match self {
            Src::View(v) => &v.desc,
            Src::InPlace(d) => d,
        }
    }

    /// The separate view, if this input does not alias the output.
    pub fn view(&self) -> Option<&View<'a>> {
        match self {
            Src::View(v) => Some(v),
            Src::InPlace(_) => None,
        }
    }

    /// Element `i` as a real number, reading from `out` when the input aliases it.
    #[inline]
    pub fn get(&self, out: &Out<'_>, i: usize) -> f32 {
        match self {
            Src::View(v) => v.get(i),
            Src::InPlace(d) => load(out.bytes, d, i),
        }
    }
}

/// A writable op output in the arena.
pub struct Out<'a> {
    /// Dtype, shape and quantisation.
    pub desc: Desc,
    /// Exactly `desc.byte_len()` bytes.
    pub bytes: &'a mut [u8],
}

impl Out<'_> {
    /// Stores a real value at element `i`, quantising if the output is int8.
    #[inline]
    pub fn set(&mut self, i: usize, v: f32) {
        store(self.bytes, &self.desc, i, v)
    }
}
