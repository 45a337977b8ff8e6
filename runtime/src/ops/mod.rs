//! The op set of the `.mote` format: kinds, parameters and their on-disk encoding.
//!
//! Each op is stored as a kind tag plus a few little-endian `u32` parameter words.
//! [`Op::decode`] validates the words; [`Op::encode`] writes them (used by the converter).

mod attention;
mod conv;
mod elementwise;

pub use attention::{relative_bucket, Attention, KvCache, MaskMode, PositionBias};
pub use conv::Conv;
pub use elementwise::{BinaryOp, UnaryOp};

use crate::error::{Error, Result};
use crate::tensor::MAX_RANK;

/// The most parameter words any op uses.
pub const MAX_PARAM_WORDS: usize = 16;
/// The most inputs any op takes (Concat is the widest).
pub const MAX_INPUTS: usize = 16;

/// One op of the graph with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// Fully connected: `a [.., M, K]` times constant weights `w [N, K]` (+ bias `[N]`).
    /// f32 path: `w` f32 or f16, bias f32. int8 path: `a` i8, `w` i8 per-channel, bias i32,
    /// plus a requantisation table `i32 [N, 2]` (multiplier, shift) when the output is i8.
    MatMul {
        /// Whether input 2 is a bias.
        has_bias: bool,
    },
    /// `a [.., M, K] x b [.., K, N]` with both operands computed at run time.
    BatchMatMul,
    /// Element-wise binary op with broadcasting.
    Binary(BinaryOp),
    /// Element-wise unary op.
    Unary(UnaryOp),
    /// Softmax along `axis`.
    Softmax {
        /// Axis to normalise.
        axis: u8,
    },
    /// 2-D convolution or transposed convolution.
    Conv(Conv),
    /// Nearest-neighbour upsampling of `[N, C, H, W]` by integer (height, width) factors.
    Upsample {
        /// Factors along (height, width).
        scale: [u8; 2],
    },
    /// Sum along `axis` (kept as size 1 or dropped: the output holds one value per position of
    /// the other axes).
    ReduceSum {
        /// Axis to sum.
        axis: u8,
    },
    /// LayerNorm over the last axis: inputs `x`, `gamma`, optional `beta`.
    LayerNorm {
        /// Variance epsilon.
        eps: f32,
        /// Whether input 2 is a bias.
        has_beta: bool,
    },
    /// GroupNorm over `x [N, C, *spatial]`: the channels split into `groups` equal groups, each
    /// (sample, group) normalised over its channels and positions, then per-channel `gamma [C]`
    /// and `beta [C]` (inputs 1 and 2). InstanceNorm is `groups = C`. Math is f32.
    GroupNorm {
        /// Variance epsilon (finite, not negative).
        eps: f32,
        /// Number of groups (non-zero, divides C).
        groups: u16,
    },
    /// RMSNorm over the last axis: inputs `x`, `gamma`.
    RmsNorm {
        /// Epsilon added to the mean square.
        eps: f32,
    },
    /// Gather rows of `data` along `axis` by `indices` (i32).
    Gather {
        /// Axis of `data` to index.
        axis: u8,
    },
    /// Same elements, new shape (a no-op when planned in place).
    Reshape,
    /// Permute axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// Permutation (first `rank` entries used).
        perm: [u8; MAX_RANK],
    },
    /// Concatenate inputs along `axis`.
    Concat {
        /// Axis to join.
        axis: u8,
    },
    /// Strided slice: output element `idx` reads input `start + idx * step` per axis.
    Slice {
        /// First index per axis.
        starts: [u32; MAX_RANK],
        /// Step per axis (non-zero; negative walks backwards).
        steps: [i32; MAX_RANK],
    },
    /// Fused streaming multi-head attention.
    Attention(Attention),
    /// Position indices `start + (session position) + i * step` as i32 `[n]`.
    Positions {
        /// First position.
        start: i32,
        /// Increment.
        step: i32,
    },
    /// Reads a persistent tensor (recurrent memory such as Transformer-XL's) from the state
    /// region at `offset` into the arena. No inputs.
    LoadState {
        /// Byte offset in the state region (at least the state header).
        offset: u32,
    },
    /// Writes its input to the state region at `offset` (for the next call) and passes it
    /// through as its output. Runs after every `LoadState` of the same slot.
    StoreState {
        /// Byte offset in the state region (at least the state header).
        offset: u32,
    },
    /// Switch-Transformer feed-forward block with top-1 routing: only the chosen expert runs.
    ///
    /// Inputs: `x [.., D]`, router `w [E, D]`, router bias `[E]`, `w1 [E, F, D]`,
    /// `b1 [E, F]`, `w2 [E, D, F]`, `b2 [E, D]`. For each token, `e = argmax(router)` (first on
    /// ties) and `y = p_e · (w2_e · act(w1_e · x + b1_e) + b2_e)` with `p_e` the router's
    /// softmax probability. Tokens routed to an expert after it has taken `capacity` tokens
    /// in this call (in row order) output zeros, as dropped tokens do in Switch; 0 means no
    /// limit. Weights are f32 or f16; math is f32.
    Moe {
        /// Activation between the two expert layers.
        activation: UnaryOp,
        /// Tokens each expert takes per call (0 = unlimited).
        capacity: u32,
    },
}

/// On-disk kind tags.
mod kind {
    pub const MATMUL: u16 = 1;
    pub const BATCH_MATMUL: u16 = 2;
    pub const BINARY: u16 = 3;
    pub const UNARY: u16 = 4;
    pub const SOFTMAX: u16 = 5;
    pub const LAYER_NORM: u16 = 6;
    pub const RMS_NORM: u16 = 7;
    pub const GATHER: u16 = 8;
    pub const RESHAPE: u16 = 9;
    pub const TRANSPOSE: u16 = 10;
    pub const CONCAT: u16 = 11;
    pub const SLICE: u16 = 12;
    pub const ATTENTION: u16 = 13;
    pub const POSITIONS: u16 = 14;
    pub const LOAD_STATE: u16 = 15;
    pub const STORE_STATE: u16 = 16;
    pub const MOE: u16 = 17;
    pub const REDUCE_SUM: u16 = 18;
    pub const CONV: u16 = 19;
    pub const UPSAMPLE: u16 = 20;
    pub const GROUP_NORM: u16 = 21;
}

/// Parameter words of one op, without allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParamWords {
    words: [u32; MAX_PARAM_WORDS],
    len: usize,
}

impl ParamWords {
    fn push(&mut self, w: u32) {
        // Encoders below never exceed MAX_PARAM_WORDS.
        self.words[self.len] = w;
        self.len += 1;
    }

    /// The encoded words.
    pub fn as_slice(&self) -> &[u32] {
        &self.words[..self.len]
    }
}

fn word(p: &[u32], i: usize) -> Result<u32> {
    p.get(i).copied().ok_or(Error::BadParams)
}

fn bool_word(p: &[u32], i: usize) -> Result<bool> {
    match word(p, i)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::BadParams),
    }
}

fn finite(p: &[u32], i: usize) -> Result<f32> {
    let v = f32::from_bits(word(p, i)?);
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::BadParams)
    }
}

impl Op {
    /// A short human-readable name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::MatMul { .. } => "MatMul",
            Op::BatchMatMul => "BatchMatMul",
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Max => "Max",
                BinaryOp::Min => "Min",
                BinaryOp::Pow => "Pow",
            },
            Op::Unary(u) => match u {
                UnaryOp::Relu => "Relu",
                UnaryOp::Gelu => "Gelu",
                UnaryOp::GeluTanh => "GeluTanh",
                UnaryOp::Silu => "Silu",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Exp => "Exp",
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Neg => "Neg",
                UnaryOp::Erf => "Erf",
                UnaryOp::Abs => "Abs",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Identity => "Convert",
                UnaryOp::Sin => "Sin",
                UnaryOp::Cos => "Cos",
                UnaryOp::Log => "Log",
                UnaryOp::Softplus => "Softplus",
            },
            Op::Softmax { .. } => "Softmax",
            Op::ReduceSum { .. } => "ReduceSum",
            Op::Conv(c) if c.transposed => "ConvTranspose",
            Op::Conv(_) => "Conv",
            Op::Upsample { .. } => "Upsample",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::GroupNorm { .. } => "GroupNorm",
            Op::RmsNorm { .. } => "RmsNorm",
            Op::Gather { .. } => "Gather",
            Op::Reshape => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Slice { .. } => "Slice",
            Op::Attention(_) => "Attention",
            Op::Positions { .. } => "Positions",
            Op::LoadState { .. } => "LoadState",
            Op::StoreState { .. } => "StoreState",
            Op::Moe { .. } => "Moe",
        }
    }

    /// Whether the op may write its output over its first input (element-wise ops).
    pub fn allows_in_place(&self) -> bool {
        matches!(self, Op::Binary(_) | Op::Unary(_) | Op::Reshape | Op::StoreState { .. })
    }

    /// Encodes the op as `(kind, parameter words)`.
    pub fn encode(&self) -> (u16, ParamWords) {
        let mut p = ParamWords::default();
        let k = match *self {
            Op::MatMul { has_bias } => {
                p.push(has_bias as u32);
                kind::MATMUL
            }
            Op::BatchMatMul => kind::BATCH_MATMUL,
            Op::Binary(b) => {
                p.push(b as u32);
                kind::BINARY
            }
            Op::Unary(u) => {
                p.push(u as u32);
                kind::UNARY
            }
            Op::Softmax { axis } => {
                p.push(axis as u32);
                kind::SOFTMAX
            }
            Op::ReduceSum { axis } => {
                p.push(axis as u32);
                kind::REDUCE_SUM
            }
            Op::Conv(c) => {
                c.words().iter().for_each(|&w| p.push(w));
                kind::CONV
            }
            Op::Upsample { scale } => {
                p.push(scale[0] as u32 | (scale[1] as u32) << 8);
                kind::UPSAMPLE
            }
            Op::LayerNorm { eps, has_beta } => {
                p.push(eps.to_bits());
                p.push(has_beta as u32);
                kind::LAYER_NORM
            }
            Op::RmsNorm { eps } => {
                p.push(eps.to_bits());
                kind::RMS_NORM
            }
            Op::GroupNorm { eps, groups } => {
                p.push(eps.to_bits());
                p.push(groups as u32);
                kind::GROUP_NORM
            }
            Op::Gather { axis } => {
                p.push(axis as u32);
                kind::GATHER
            }
            Op::Reshape => kind::RESHAPE,
            Op::Transpose { perm } => {
                p.push(u32::from_le_bytes([perm[0], perm[1], perm[2], perm[3]]));
                p.push(u32::from_le_bytes([perm[4], perm[5], 0, 0]));
                kind::TRANSPOSE
            }
            Op::Concat { axis } => {
                p.push(axis as u32);
                kind::CONCAT
            }
            Op::Slice { starts, steps } => {
                for s in starts {
                    p.push(s);
                }
                for s in steps {
                    p.push(s as u32);
                }
                kind::SLICE
            }
            Op::Attention(a) => {
                p.push(a.heads as u32 | (a.head_dim as u32) << 16);
                let (bias_kind, bucket_word) = match a.bias {
                    PositionBias::None => (0, None),
                    PositionBias::Buckets { buckets, max_distance, bidirectional } => {
                        (1 | (bidirectional as u32) << 8, Some(buckets as u32 | (max_distance as u32) << 16))
                    }
                    PositionBias::XlRelative => (2, None),
                };
                p.push(a.mask as u32 | (a.key_mask as u32) << 8 | bias_kind << 16);
                p.push(a.scale.to_bits());
                if let Some(w) = bucket_word {
                    p.push(w);
                }
                match a.cache {
                    None => p.push(0),
                    Some(c) => {
                        p.push(1);
                        p.push(c.k_offset);
                        p.push(c.v_offset);
                        p.push(c.capacity);
                    }
                }
                kind::ATTENTION
            }
            Op::Positions { start, step } => {
                p.push(start as u32);
                p.push(step as u32);
                kind::POSITIONS
            }
            Op::LoadState { offset } => {
                p.push(offset);
                kind::LOAD_STATE
            }
            Op::StoreState { offset } => {
                p.push(offset);
                kind::STORE_STATE
            }
            Op::Moe { activation, capacity } => {
                p.push(activation as u32);
                p.push(capacity);
                kind::MOE
            }
        };
        (k, p)
    }

    /// Decodes and validates an op from its kind tag and parameter words.
    pub fn decode(kind: u16, p: &[u32]) -> Result<Op> {
        let op = match kind {
            kind::MATMUL => Op::MatMul { has_bias: bool_word(p, 0)? },
            kind::BATCH_MATMUL => Op::BatchMatMul,
            kind::BINARY => Op::Binary(BinaryOp::from_u32(word(p, 0)?)?),
            kind::UNARY => Op::Unary(UnaryOp::from_u32(word(p, 0)?)?),
            kind::SOFTMAX => Op::Softmax { axis: small(word(p, 0)?)? },
            kind::REDUCE_SUM => Op::ReduceSum { axis: small(word(p, 0)?)? },
            kind::CONV => Op::Conv(Conv::from_words([word(p, 0)?, word(p, 1)?, word(p, 2)?])),
            kind::UPSAMPLE => {
                let w = word(p, 0)?;
                Op::Upsample { scale: [w as u8, (w >> 8) as u8] }
            }
            kind::LAYER_NORM => Op::LayerNorm { eps: finite(p, 0)?, has_beta: bool_word(p, 1)? },
            kind::RMS_NORM => Op::RmsNorm { eps: finite(p, 0)? },
            kind::GROUP_NORM => {
                let eps = finite(p, 0)?;
                let groups = u16::try_from(word(p, 1)?).map_err(|_| Error::BadParams)?;
                if eps < 0.0 || groups == 0 {
                    return Err(Error::BadParams);
                }
                Op::GroupNorm { eps, groups }
            }
            kind::GATHER => Op::Gather { axis: small(word(p, 0)?)? },
            kind::RESHAPE => Op::Reshape,
            kind::TRANSPOSE => {
                let a = word(p, 0)?.to_le_bytes();
                let b = word(p, 1)?.to_le_bytes();
                Op::Transpose { perm: [a[0], a[1], a[2], a[3], b[0], b[1]] }
            }
            kind::CONCAT => Op::Concat { axis: small(word(p, 0)?)? },
            kind::SLICE => {
                let mut starts = [0u32; MAX_RANK];
                let mut steps = [0i32; MAX_RANK];
                for i in 0..MAX_RANK {
                    starts[i] = word(p, i)?;
                    steps[i] = word(p, MAX_RANK + i)? as i32;
                }
                Op::Slice { starts, steps }
            }
            kind::ATTENTION => {
                let (hw, flags) = (word(p, 0)?, word(p, 1)?);
                let mask = match flags & 0xFF {
                    0 => MaskMode::None,
                    1 => MaskMode::Causal,
                    2 => MaskMode::Prefix,
                    _ => return Err(Error::BadParams),
                };
                let mut next = 3;
                let bias = match flags >> 16 {
                    0 => PositionBias::None,
                    1 | 0x101 => {
                        let w = word(p, next)?;
                        next += 1;
                        let (buckets, max_distance) = ((w & 0xFFFF) as u16, (w >> 16) as u16);
                        if buckets < 2 || max_distance == 0 {
                            return Err(Error::BadParams);
                        }
                        PositionBias::Buckets { buckets, max_distance, bidirectional: flags >> 24 == 1 }
                    }
                    2 => PositionBias::XlRelative,
                    _ => return Err(Error::BadParams),
                };
                let cache = match word(p, next)? {
                    0 => None,
                    1 => Some(KvCache {
                        k_offset: word(p, next + 1)?,
                        v_offset: word(p, next + 2)?,
                        capacity: word(p, next + 3)?,
                    }),
                    _ => return Err(Error::BadParams),
                };
                Op::Attention(Attention {
                    heads: (hw & 0xFFFF) as u16,
                    head_dim: (hw >> 16) as u16,
                    mask,
                    key_mask: flags >> 8 & 0xFF == 1,
                    bias,
                    scale: finite(p, 2)?,
                    cache,
                })
            }
            kind::POSITIONS => Op::Positions { start: word(p, 0)? as i32, step: word(p, 1)? as i32 },
            kind::LOAD_STATE => Op::LoadState { offset: word(p, 0)? },
            kind::STORE_STATE => Op::StoreState { offset: word(p, 0)? },
            kind::MOE => Op::Moe { activation: UnaryOp::from_u32(word(p, 0)?)?, capacity: word(p, 1)? },
            _ => return Err(Error::BadEnum),
        };
        // Reject trailing garbage so every file has exactly one encoding.
        if op.encode().1.as_slice() != p {
            return Err(Error::BadParams);
        }
        Ok(op)
    }
}

fn small(v: u32) -> Result<u8> {
    if (v as usize) < MAX_RANK {
        Ok(v as u8)
    } else {
        Err(Error::BadParams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips_through_its_encoding() {
        let ops = [
            Op::MatMul { has_bias: true },
            Op::BatchMatMul,
            Op::Binary(BinaryOp::Pow),
            Op::Unary(UnaryOp::Identity),
            Op::Softmax { axis: 3 },
            Op::ReduceSum { axis: 1 },
            Op::Conv(Conv {
                transposed: true,
                has_bias: true,
                stride: [2, 1],
                dilation: [1, 3],
                pads: [1, 0, 2, 3],
                groups: 4,
            }),
            Op::Upsample { scale: [2, 3] },
            Op::LayerNorm { eps: 1e-5, has_beta: false },
            Op::RmsNorm { eps: 1e-6 },
            Op::GroupNorm { eps: 1e-5, groups: 8 },
            Op::Gather { axis: 1 },
            Op::Reshape,
            Op::Transpose { perm: [0, 2, 1, 3, 4, 5] },
            Op::Concat { axis: 2 },
            Op::Slice { starts: [0, 1, 2, 3, 4, 5], steps: [1, -1, 2, 1, 1, 1] },
            Op::Attention(Attention {
                heads: 4,
                head_dim: 16,
                mask: MaskMode::Causal,
                key_mask: false,
                bias: PositionBias::None,
                scale: 0.25,
                cache: Some(KvCache { k_offset: 16, v_offset: 4112, capacity: 64 }),
            }),
            Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                mask: MaskMode::Prefix,
                key_mask: true,
                bias: PositionBias::Buckets { buckets: 32, max_distance: 128, bidirectional: true },
                scale: 1.0,
                cache: None,
            }),
            Op::Attention(Attention {
                heads: 2,
                head_dim: 8,
                mask: MaskMode::Causal,
                key_mask: false,
                bias: PositionBias::XlRelative,
                scale: 0.5,
                cache: Some(KvCache { k_offset: 16, v_offset: 272, capacity: 16 }),
            }),
            Op::Positions { start: 0, step: 1 },
            Op::LoadState { offset: 16 },
            Op::StoreState { offset: 64 },
            Op::Moe { activation: UnaryOp::Gelu, capacity: 12 },
        ];
        for op in ops {
            let (k, p) = op.encode();
            assert_eq!(Op::decode(k, p.as_slice()), Ok(op));
        }
    }

    #[test]
    fn malformed_params_are_errors() {
        assert_eq!(Op::decode(99, &[]), Err(Error::BadEnum));
        assert_eq!(Op::decode(kind::BINARY, &[42]), Err(Error::BadParams));
        assert_eq!(Op::decode(kind::MATMUL, &[1, 7]), Err(Error::BadParams));
        assert_eq!(Op::decode(kind::RMS_NORM, &[f32::NAN.to_bits()]), Err(Error::BadParams));
        assert_eq!(Op::decode(kind::SOFTMAX, &[9]), Err(Error::BadParams));
        let eps = 1e-5f32.to_bits();
        assert_eq!(Op::decode(kind::GROUP_NORM, &[eps, 0]), Err(Error::BadParams), "zero groups");
        assert_eq!(Op::decode(kind::GROUP_NORM, &[eps, 1 << 16]), Err(Error::BadParams), "groups over u16");
        assert_eq!(Op::decode(kind::GROUP_NORM, &[(-1f32).to_bits(), 4]), Err(Error::BadParams), "negative eps");
        assert_eq!(Op::decode(kind::GROUP_NORM, &[eps]), Err(Error::BadParams), "missing groups");
    }
}
