//! Parameters of the fused attention op: mask modes, position biases and the KV cache.

/// How attention masks keys (on top of an optional key-padding mask input).
///
/// A query row `s` sits at key position `qpos(s)`: `position + s` with a cache, otherwise
/// `s + Skv - Sq` (queries aligned with the *last* `Sq` keys, so keys in front of them, such
/// as Transformer-XL memory, are earlier positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum MaskMode {
    /// Every query sees every key (bidirectional, e.g. BERT, encoders, cross-attention).
    None = 0,
    /// Query `s` sees keys `j <= qpos(s)` (GPT, decoders, Transformer-XL with memory).
    Causal = 1,
    /// Prefix-LM (UniLM, T5 as a decoder-only model): keys `j < prefix[b]` are visible to every
    /// query of batch `b`, the rest causally. The prefix lengths are an input `[B]`. With a
    /// cache, the whole prefix must be in the first call (later calls only extend the causal
    /// part).
    Prefix = 2,
}

/// A position-dependent term added to attention scores, computed on the fly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PositionBias {
    /// No positional term.
    None,
    /// T5's bucketed relative bias: `score += table[bucket(j - qpos(s)), h]` with the table an
    /// input `[buckets, H]` and [`relative_bucket`] as the bucket function.
    Buckets {
        /// Number of buckets (T5 default 32).
        buckets: u16,
        /// Distance at which the logarithmic buckets saturate (T5 default 128).
        max_distance: u16,
        /// Whether keys after the query get their own buckets (encoders) or share bucket 0.
        bidirectional: bool,
    },
    /// Transformer-XL relative attention: `score = scale·((q + u)·k_j + (q + v)·r[qpos(s) - j])`
    /// with inputs `u [H*Dh]`, `v [H*Dh]` (the learned global biases) and the projected
    /// relative encodings `r [R, H*Dh]` indexed by distance. Requires [`MaskMode::Causal`].
    XlRelative,
}

/// T5's relative-position bucket of `relative = key position - query position`.
///
/// Exact buckets for small distances, logarithmically wider ones up to `max_distance`, as in
/// the T5 reference implementation (computed in f32 with `libm`, so host and device agree).
///
/// ```
/// use mote::ops::relative_bucket;
/// assert_eq!(relative_bucket(0, 32, 128, true), 0);
/// assert_eq!(relative_bucket(3, 32, 128, true), 16 + 3);
/// assert_eq!(relative_bucket(-3, 32, 128, false), 3);
/// assert_eq!(relative_bucket(5, 32, 128, false), 0); // future keys share bucket 0
/// assert_eq!(relative_bucket(-1000, 32, 128, false), 31);
/// ```
pub fn relative_bucket(relative: i32, buckets: u16, max_distance: u16, bidirectional: bool) -> u16 {
    if buckets < 2 {
        return 0;
    }
    let (mut n, mut base) = (buckets as i32, 0i32);
    let distance = if bidirectional {
        n /= 2;
        if relative > 0 {
            base = n;
        }
        relative.unsigned_abs()
    } else {
        relative.min(0).unsigned_abs()
    };
    let exact = (n / 2).max(1) as u32;
    let bucket = if distance < exact {
        distance as i32
    } else {
        let ratio = libm::logf(distance as f32 / exact as f32) / libm::logf(max_distance as f32 / exact as f32);
        // `as` saturates (NaN to 0), so a degenerate `max_distance` cannot overflow.
        let large = (exact as i32).saturating_add((ratio * (n - exact as i32) as f32) as i32);
        large.clamp(0, n - 1)
    };
    base.saturating_add(bucket).clamp(0, buckets as i32 - 1) as u16
}

/// Where an attention op keeps its key/value cache in the state region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KvCache {
    /// Byte offset of the key cache in the state region.
    pub k_offset: u32,
    /// Byte offset of the value cache in the state region.
    pub v_offset: u32,
    /// Positions the cache holds.
    pub capacity: u32,
}

/// Fused multi-head attention parameters.
///
/// Inputs, in this order: `q [B, Sq, H*Dh]`, `k [B, Skv, H*Dh]`, `v [B, Skv, H*Dh]`, then
/// the key mask `[B, Skv]` (non-zero = attend) if `key_mask`, the prefix lengths `[B]` for
/// [`MaskMode::Prefix`], and the inputs of `bias` ([`PositionBias`]). Output `[B, Sq, H*Dh]`.
/// `Sq` may differ from `Skv` (cross-attention to an encoder memory, or keys that include a
/// memory before the queries). With a cache, `k`/`v` hold only the new positions; they are
/// appended at the session position and attention runs over the whole cached prefix (batch
/// must be 1, and the key mask is `[1, capacity]`, indexed by absolute position).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Attention {
    /// Number of heads `H`.
    pub heads: u16,
    /// Size of each head `Dh`.
    pub head_dim: u16,
    /// Mask mode.
    pub mask: MaskMode,
    /// Whether a key-padding mask input follows `v`.
    pub key_mask: bool,
    /// Positional term added to the scores.
    pub bias: PositionBias,
    /// Scale applied to `q·k` (usually `1/sqrt(Dh)`).
    pub scale: f32,
    /// Incremental decoding cache, if any.
    pub cache: Option<KvCache>,
}

impl Attention {
    /// Number of inputs this op takes (`q`, `k`, `v` and the optional ones).
    pub fn n_inputs(&self) -> usize {
        let bias = match self.bias {
            PositionBias::None => 0,
            PositionBias::Buckets { .. } => 1,
            PositionBias::XlRelative => 3,
        };
        3 + self.key_mask as usize + (self.mask == MaskMode::Prefix) as usize + bias
    }
}
