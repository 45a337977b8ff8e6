//! Shape arithmetic shared by the kernels: strides, broadcasting and a strided walker.

use crate::error::{Error, Result};
use crate::tensor::{Shape, MAX_RANK};

/// Product of `dims`, or `BadShape` on overflow.
pub(crate) fn product(dims: &[u32]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize)).ok_or(Error::BadShape)
}

/// Product of `dims` without overflow checks (for shapes that [`product`] accepted).
pub(crate) fn prod(dims: &[u32]) -> usize {
    dims.iter().fold(1usize, |acc, &d| acc.wrapping_mul(d as usize))
}

/// Row-major element strides of `shape`.
pub(crate) fn strides(shape: &Shape) -> [isize; MAX_RANK] {
    let mut s = [0isize; MAX_RANK];
    let mut acc = 1isize;
    for (i, &d) in shape.dims().iter().enumerate().rev() {
        s[i] = acc;
        acc = acc.wrapping_mul(d as isize);
    }
    s
}

/// NumPy broadcast of two shapes, or `BadShape` if they are incompatible.
pub(crate) fn broadcast(a: &[u32], b: &[u32]) -> Result<Shape> {
    let rank = a.len().max(b.len());
    let mut out = [0u32; MAX_RANK];
    if rank > MAX_RANK {
        return Err(Error::BadShape);
    }
    for (i, o) in out.iter_mut().enumerate().take(rank) {
        let x = aligned(a, rank, i);
        let y = aligned(b, rank, i);
        *o = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return Err(Error::BadShape);
        };
    }
    Shape::new(&out[..rank])
}

/// Dimension `i` of `dims` right-aligned to `rank` (1 where `dims` is shorter).
fn aligned(dims: &[u32], rank: usize, i: usize) -> u32 {
    let pad = rank - dims.len();
    if i < pad {
        1
    } else {
        dims[i - pad]
    }
}

/// Strides that read `input` broadcast (right-aligned) to an output of rank `rank`:
/// zero along broadcast axes. `scale` multiplies every stride (e.g. a matrix size).
pub(crate) fn broadcast_strides(input: &[u32], rank: usize, scale: usize) -> [isize; MAX_RANK] {
    let mut s = [0isize; MAX_RANK];
    let pad = rank - input.len();
    let mut acc = scale as isize;
    for (i, &d) in input.iter().enumerate().rev() {
        s[pad + i] = if d == 1 { 0 } else { acc };
        acc = acc.wrapping_mul(d as isize);
    }
    s
}

/// Walks a row-major multi-index over `dims`, keeping one linear offset per operand.
///
/// Call [`Walk::advance`] once per element; `off[p]` is operand `p`'s offset for the
/// current index. Offsets only take values the caller's strides can reach, so for validated
/// shapes they stay inside their tensors.
pub(crate) struct Walk<const P: usize> {
    rank: usize,
    dims: [usize; MAX_RANK],
    idx: [usize; MAX_RANK],
    step: [[isize; MAX_RANK]; P],
    back: [[isize; MAX_RANK]; P],
    /// Current offset of each operand.
    pub off: [isize; P],
}

impl<const P: usize> Walk<P> {
    /// A walker over `dims` starting at `base` with per-operand strides `step`.
    pub fn new(dims: &[u32], step: [[isize; MAX_RANK]; P], base: [isize; P]) -> Self {
        let mut d = [0usize; MAX_RANK];
        let mut back = [[0isize; MAX_RANK]; P];
        for (i, &n) in dims.iter().enumerate() {
            d[i] = n as usize;
            for p in 0..P {
                back[p][i] = step[p][i].wrapping_mul((n as isize).saturating_sub(1));
            }
        }
        Walk { rank: dims.len(), dims: d, idx: [0; MAX_RANK], step, back, off: base }
    }

    /// Current offset of operand `p` as an index.
    #[inline]
    pub fn at(&self, p: usize) -> usize {
        self.off[p] as usize
    }

    /// Moves to the next multi-index (row-major, last axis fastest).
    #[inline]
    pub fn advance(&mut self) {
        for ax in (0..self.rank).rev() {
            if self.idx[ax] + 1 < self.dims[ax] {
                self.idx[ax] += 1;
                for p in 0..P {
                    self.off[p] = self.off[p].wrapping_add(self.step[p][ax]);
                }
                return;
            }
            self.idx[ax] = 0;
            for p in 0..P {
                self.off[p] = self.off[p].wrapping_sub(self.back[p][ax]);
            }
        }
    }
}
