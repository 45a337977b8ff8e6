//! Zero-copy view of a validated `.mote` file.

use super::*;
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::{DType, Desc, Quant, Shape, View, MAX_RANK};

/// Index of a tensor in the tensor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorId(pub u32);

/// Index of an entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EntryId(pub u32);

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Storage {
    /// In the caller's arena, at a planned offset.
    Arena,
    /// In the file's weight section (read-only, e.g. flash).
    Weights,
}

/// A decoded tensor record.
///
/// Layout (56 bytes): `u8` dtype, `u8` storage (0 arena, 1 weights), `u8` rank, `u8` channel
/// axis (255 = per-tensor), `[u32; 6]` dims, `u32` offset (arena- or weights-relative),
/// `u32` byte length, `f32` scale, `i32` zero point, `u32` per-channel scales offset in the
/// weights (or none), `u32` name, `u32` reserved (0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorInfo {
    /// Dtype, shape and per-tensor quantisation.
    pub desc: Desc,
    /// Arena or weights.
    pub storage: Storage,
    /// Byte offset within the arena or the weight section.
    pub offset: u32,
    /// Byte length (`numel * dtype size`).
    pub byte_len: u32,
    /// Axis of per-channel weight scales, if any.
    pub channel_axis: Option<u8>,
    /// Weights-relative offset of the per-channel `f32` scales.
    pub channel_scales: Option<u32>,
    /// Offset of the tensor's name in the string section.
    pub name: Option<u32>,
}

impl TensorInfo {
    /// Byte range in its storage.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset as usize..self.offset as usize + self.byte_len as usize
    }
}

/// A decoded op record.
///
/// Layout (16 bytes): `u16` kind, `u8` input count, `u8` output count (always 1), `u32` index
/// of the first operand in the operand section (inputs, then the output), `u32` index of the
/// first parameter word, `u16` parameter word count, `u16` reserved (0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpInfo {
    /// The op and its parameters.
    pub op: Op,
    /// Number of inputs.
    pub n_inputs: usize,
    /// Operand-section index of the first input.
    pub operands: u32,
}

/// A decoded entry-point record.
///
/// Layout (32 bytes): `u32` name, `u32` first op, `u32` op count, `u32` operand index of the
/// inputs then outputs, `u16` input count, `u16` output count, `u32` flags
/// ([`ENTRY_ADVANCES`]), `u32` positions advanced per run, `u32` reserved (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    /// Offset of the name in the string section.
    pub name: u32,
    /// First op index.
    pub first_op: u32,
    /// Number of ops.
    pub n_ops: u32,
    /// Operand-section index of the inputs, followed by the outputs.
    pub io: u32,
    /// Number of inputs.
    pub n_inputs: u16,
    /// Number of outputs.
    pub n_outputs: u16,
    /// Flags.
    pub flags: u32,
    /// Positions the session advances after each run (with [`ENTRY_ADVANCES`]).
    pub advance: u32,
}

/// A named region of the state (a KV cache, recurrent memory, sampler latent).
///
/// Layout (16 bytes): `u32` name, `u32` offset in the state region, `u32` length, `u32` reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSlot {
    /// Offset of the name in the string section.
    pub name: u32,
    /// Byte offset in the state region.
    pub offset: u32,
    /// Byte length.
    pub len: u32,
}

/// A parsed, fully validated `.mote` model borrowing its bytes (flash, mmap or a buffer).
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    bytes: &'a [u8],
    arena_bytes: u32,
    state_bytes: u32,
    sections: [(u32, u32); SECTIONS],
    weights: (u32, u32),
}

impl<'a> Model<'a> {
    /// Parses and validates a model. Every offset, length, alignment, dtype, op arity and
    /// shape is checked here, once; afterwards running the model cannot go out of bounds.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.len() >= 4 && bytes[..4] != MAGIC { Error::BadMagic } else { Error::Truncated });
        }
        if bytes[..4] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = read_u16(bytes, 4).ok_or(Error::Truncated)?;
        if version != FORMAT_VERSION {
            return Err(Error::VersionMismatch { found: version, expected: FORMAT_VERSION });
        }
        let u32_at = |off| read_u32(bytes, off).ok_or(Error::Truncated);
        if read_u16(bytes, 6) != Some(HEADER_LEN as u16) {
            return Err(Error::OutOfBounds);
        }
        let file_len = u32_at(8)? as usize;
        if file_len > bytes.len() {
            return Err(Error::Truncated);
        }
        if file_len < HEADER_LEN {
            return Err(Error::OutOfBounds);
        }
        let bytes = &bytes[..file_len];
        if crc32fast::hash(&bytes[16..]) != u32_at(12)? {
            return Err(Error::ChecksumMismatch);
        }
        let mut sections = [(0u32, 0u32); SECTIONS];
        for (i, s) in sections.iter_mut().enumerate() {
            *s = (u32_at(24 + 8 * i)?, u32_at(28 + 8 * i)?);
        }
        let model = Model {
            bytes,
            arena_bytes: u32_at(16)?,
            state_bytes: u32_at(20)?,
            sections,
            weights: (u32_at(88)?, u32_at(92)?),
        };
        super::validate::validate(&model)?;
        Ok(model)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Arena bytes a session needs (peak over all entry points).
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes as usize
    }

    /// State bytes a session needs (0 for stateless models).
    pub fn state_bytes(&self) -> usize {
        self.state_bytes as usize
    }

    /// Bytes of the weight section.
    pub fn weight_bytes(&self) -> usize {
        self.weights.1 as usize
    }

    /// `(count, byte offset)` of a section.
    pub(crate) fn section(&self, s: Section) -> (usize, usize) {
        let (c, o) = self.sections[s as usize];
        (c as usize, o as usize)
    }

    pub(crate) fn weights_range(&self) -> (usize, usize) {
        (self.weights.0 as usize, self.weights.1 as usize)
    }

    pub(crate) fn record_bytes(&self, s: Section, i: usize) -> Result<&'a [u8]> {
        self.record(s, i)
    }

    fn record(&self, s: Section, i: usize) -> Result<&'a [u8]> {
        let (count, off) = self.section(s);
        if i >= count {
            return Err(Error::NotFound);
        }
        let size = record_size(s);
        let start = off + i * size;
        self.bytes.get(start..start + size).ok_or(Error::OutOfBounds)
    }

    fn word(&self, s: Section, i: usize) -> Result<u32> {
        let r = self.record(s, i)?;
        Ok(u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.section(Section::Tensors).0
    }

    /// Decodes tensor `id`.
    pub fn tensor(&self, id: TensorId) -> Result<TensorInfo> {
        let r = self.record(Section::Tensors, id.0 as usize)?;
        let w = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        let dtype = DType::from_u8(r[0])?;
        let storage = match r[1] {
            0 => Storage::Arena,
            1 => Storage::Weights,
            _ => return Err(Error::BadEnum),
        };
        let rank = r[2] as usize;
        if rank > MAX_RANK {
            return Err(Error::BadShape);
        }
        let mut dims = [0u32; MAX_RANK];
        for (k, d) in dims.iter_mut().enumerate().take(rank) {
            *d = w(4 + 4 * k);
        }
        let opt = |v: u32| (v != NONE).then_some(v);
        Ok(TensorInfo {
            desc: Desc {
                dtype,
                shape: Shape::new(&dims[..rank])?,
                quant: Quant { scale: f32::from_bits(w(36)), zero_point: w(40) as i32 },
            },
            storage,
            offset: w(28),
            byte_len: w(32),
            channel_axis: (r[3] != 0xFF).then_some(r[3]),
            channel_scales: opt(w(44)),
            name: opt(w(48)),
        })
    }

    /// Name of tensor `id`, if it has one.
    pub fn tensor_name(&self, id: TensorId) -> Option<&'a str> {
        self.string(self.tensor(id).ok()?.name?).ok()
    }

    /// A read-only view of a weight tensor.
    pub fn weight_view(&self, t: &TensorInfo) -> Result<View<'a>> {
        if t.storage != Storage::Weights {
            return Err(Error::BadParams);
        }
        let (woff, wlen) = self.weights_range();
        let w = self.bytes.get(woff..woff + wlen).ok_or(Error::OutOfBounds)?;
        let bytes = w.get(t.range()).ok_or(Error::OutOfBounds)?;
        let channel_scales = match (t.channel_axis, t.channel_scales) {
            (Some(axis), Some(off)) => {
                let n = t.desc.shape.dim(axis as usize) * 4;
                Some(w.get(off as usize..off as usize + n).ok_or(Error::OutOfBounds)?)
            }
            _ => None,
        };
        Ok(View { desc: t.desc, bytes, channel_scales })
    }

    /// Number of ops over all entry points.
    pub fn op_count(&self) -> usize {
        self.section(Section::Ops).0
    }

    /// Decodes op `i`.
    pub fn op(&self, i: usize) -> Result<OpInfo> {
        let r = self.record(Section::Ops, i)?;
        let kind = u16::from_le_bytes([r[0], r[1]]);
        let n_inputs = r[2] as usize;
        if r[3] != 1 || r[14] != 0 || r[15] != 0 {
            return Err(Error::BadArity);
        }
        let operands = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let params = u32::from_le_bytes([r[8], r[9], r[10], r[11]]) as usize;
        let n_params = u16::from_le_bytes([r[12], r[13]]) as usize;
        let (pcount, poff) = self.section(Section::Params);
        if params.checked_add(n_params).is_none_or(|end| end > pcount) || n_params > crate::ops::MAX_PARAM_WORDS {
            return Err(Error::OutOfBounds);
        }
        let mut words = [0u32; crate::ops::MAX_PARAM_WORDS];
        for (k, w) in words.iter_mut().enumerate().take(n_params) {
            *w = read_u32(self.bytes, poff + 4 * (params + k)).ok_or(Error::OutOfBounds)?;
        }
        Ok(OpInfo { op: Op::decode(kind, &words[..n_params])?, n_inputs, operands })
    }

    /// Tensor referenced by operand-section index `i`.
    pub fn operand(&self, i: u32) -> Result<TensorId> {
        Ok(TensorId(self.word(Section::Operands, i as usize)?))
    }

    /// Input `k` of an op.
    pub fn op_input(&self, op: &OpInfo, k: usize) -> Result<TensorId> {
        if k >= op.n_inputs {
            return Err(Error::NotFound);
        }
        self.operand(op.operands + k as u32)
    }

    /// The output of an op.
    pub fn op_output(&self, op: &OpInfo) -> Result<TensorId> {
        self.operand(op.operands + op.n_inputs as u32)
    }

    /// Number of entry points.
    pub fn entry_count(&self) -> usize {
        self.section(Section::Entries).0
    }

    /// Decodes entry point `e`.
    pub fn entry(&self, e: EntryId) -> Result<EntryInfo> {
        let r = self.record(Section::Entries, e.0 as usize)?;
        let w = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        Ok(EntryInfo {
            name: w(0),
            first_op: w(4),
            n_ops: w(8),
            io: w(12),
            n_inputs: u16::from_le_bytes([r[16], r[17]]),
            n_outputs: u16::from_le_bytes([r[18], r[19]]),
            flags: w(20),
            advance: w(24),
        })
    }

    /// Name of entry point `e`.
    pub fn entry_name(&self, e: EntryId) -> Result<&'a str> {
        self.string(self.entry(e)?.name)
    }

    /// Finds an entry point by name (`"forward"`, `"decode_step"`, ...).
    pub fn entry_by_name(&self, name: &str) -> Result<EntryId> {
        (0..self.entry_count() as u32).map(EntryId).find(|&e| self.entry_name(e) == Ok(name)).ok_or(Error::NotFound)
    }

    /// Input `k` of entry `e`.
    pub fn entry_input(&self, e: EntryId, k: usize) -> Result<TensorId> {
        let info = self.entry(e)?;
        if k >= info.n_inputs as usize {
            return Err(Error::NotFound);
        }
        self.operand(info.io + k as u32)
    }

    /// Output `k` of entry `e`.
    pub fn entry_output(&self, e: EntryId, k: usize) -> Result<TensorId> {
        let info = self.entry(e)?;
        if k >= info.n_outputs as usize {
            return Err(Error::NotFound);
        }
        self.operand(info.io + info.n_inputs as u32 + k as u32)
    }

    /// Number of named state slots.
    pub fn state_slot_count(&self) -> usize {
        self.section(Section::States).0
    }

    /// State slot `i`.
    pub fn state_slot(&self, i: usize) -> Result<StateSlot> {
        let r = self.record(Section::States, i)?;
        let w = |o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
        Ok(StateSlot { name: w(0), offset: w(4), len: w(8) })
    }

    /// Number of metadata entries.
    pub fn metadata_count(&self) -> usize {
        self.section(Section::Metadata).0
    }

    /// Metadata entry `i` as `(key, value)`.
    pub fn metadata_entry(&self, i: usize) -> Result<(&'a str, &'a str)> {
        let r = self.record(Section::Metadata, i)?;
        let k = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let v = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        Ok((self.string(k)?, self.string(v)?))
    }

    /// Looks up a metadata value (e.g. `mote.tokenizer`).
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        (0..self.metadata_count()).filter_map(|i| self.metadata_entry(i).ok()).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The string at offset `off` of the string section.
    pub fn string(&self, off: u32) -> Result<&'a str> {
        let (len, base) = self.section(Section::Strings);
        let off = off as usize;
        let n = read_u16(self.bytes, base + off).ok_or(Error::OutOfBounds)? as usize;
        if off + 2 + n > len {
            return Err(Error::OutOfBounds);
        }
        core::str::from_utf8(&self.bytes[base + off + 2..base + off + 2 + n]).map_err(|_| Error::BadString)
    }
}
