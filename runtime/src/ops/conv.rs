//! Parameters of the 2-D convolution op.

/// A 2-D convolution over `[N, C, H, W]`, or its transpose (`ConvTranspose`, which upsamples):
/// inputs `x`, constant weights and, with `has_bias`, a bias `[M]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv {
    /// `ConvTranspose` (weights `[C, M/groups, kh, kw]`) rather than `Conv` (`[M, C/groups, kh, kw]`).
    pub transposed: bool,
    /// Whether input 2 is a bias.
    pub has_bias: bool,
    /// Stride along (height, width).
    pub stride: [u8; 2],
    /// Kernel dilation along (height, width).
    pub dilation: [u8; 2],
    /// Padding (top, left, bottom, right).
    pub pads: [u8; 4],
    /// Channel groups (1: dense, C: depthwise).
    pub groups: u16,
}

impl Conv {
    /// The three parameter words.
    pub(crate) fn words(&self) -> [u32; 3] {
        let pack = |b: &[u8]| b.iter().rev().fold(0u32, |w, &v| (w << 8) | v as u32);
        [
            self.transposed as u32 | (self.has_bias as u32) << 1 | (self.groups as u32) << 16,
            pack(&[self.stride[0], self.stride[1], self.dilation[0], self.dilation[1]]),
            pack(&self.pads),
        ]
    }

    /// Parses [`Conv::words`] (non-canonical words are caught by the caller's re-encoding check).
    pub(crate) fn from_words(w: [u32; 3]) -> Self {
        let b = |word: u32, i: u32| (word >> (8 * i)) as u8;
        Conv {
            transposed: w[0] & 1 == 1,
            has_bias: w[0] & 2 == 2,
            groups: (w[0] >> 16) as u16,
            stride: [b(w[1], 0), b(w[1], 1)],
            dilation: [b(w[1], 2), b(w[1], 3)],
            pads: [b(w[2], 0), b(w[2], 1), b(w[2], 2), b(w[2], 3)],
        }
    }
}
