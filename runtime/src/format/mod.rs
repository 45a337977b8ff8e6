//! The `.mote` file format: layout constants, zero-copy reading and (with `alloc`) writing.
//!
//! All integers are little-endian. A file is a 96-byte header, then sections, each starting
//! on a 16-byte boundary, and last the weights (16-byte aligned, so SIMD kernels can load
//! them directly from flash):
//!
//! | offset | field |
//! |---|---|
//! | 0  | magic `MOTE` |
//! | 4  | `u16` format version ([`FORMAT_VERSION`]) |
//! | 6  | `u16` header length (96) |
//! | 8  | `u32` file length |
//! | 12 | `u32` CRC-32 (IEEE) of bytes `16..file_len` |
//! | 16 | `u32` arena bytes (peak over all entry points) |
//! | 20 | `u32` state bytes |
//! | 24 | 8 × (`u32` count, `u32` byte offset): tensors, ops, entries, operands, params, metadata, state slots, strings |
//! | 88 | `u32` weights offset, `u32` weights length |
//!
//! Record layouts are documented on [`TensorInfo`], [`OpInfo`], [`EntryInfo`] and [`StateSlot`].
//! Strings are a `u16` length followed by UTF-8 bytes, referenced by their offset in the string
//! section (`u32::MAX` = no string).

mod model;
mod validate;
#[cfg(feature = "alloc")]
mod writer;

pub use model::{EntryId, EntryInfo, Model, OpInfo, StateSlot, Storage, TensorId, TensorInfo};
#[cfg(feature = "alloc")]
pub use writer::{reseal, TensorSpec, Writer};

/// File magic.
pub const MAGIC: [u8; 4] = *b"MOTE";
/// The format version this runtime reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 96;
/// Alignment of every section and of every weight tensor.
pub const ALIGN: usize = 16;
/// "No value" marker for optional `u32` fields.
pub const NONE: u32 = u32::MAX;

/// Bytes per tensor record.
pub const TENSOR_RECORD: usize = 56;
/// Bytes per op record.
pub const OP_RECORD: usize = 16;
/// Bytes per entry-point record.
pub const ENTRY_RECORD: usize = 32;
/// Bytes per metadata record (key string, value string).
pub const META_RECORD: usize = 8;
/// Bytes per state-slot record.
pub const STATE_RECORD: usize = 16;
/// Bytes at the start of the state region holding the session position.
pub const STATE_HEADER: usize = 16;

/// Entry flag: the entry runs at the session position and advances it by its sequence length.
pub const ENTRY_ADVANCES: u32 = 1;

/// Index of each section in the header's section table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Section {
    /// Tensor records.
    Tensors = 0,
    /// Op records.
    Ops = 1,
    /// Entry-point records.
    Entries = 2,
    /// `u32` tensor ids referenced by ops and entries.
    Operands = 3,
    /// `u32` op parameter words.
    Params = 4,
    /// Metadata key/value records.
    Metadata = 5,
    /// Named state slots.
    States = 6,
    /// String bytes.
    Strings = 7,
}

/// Bytes per element of a section's count (strings count bytes).
pub(crate) const fn record_size(s: Section) -> usize {
    match s {
        Section::Tensors => TENSOR_RECORD,
        Section::Ops => OP_RECORD,
        Section::Entries => ENTRY_RECORD,
        Section::Operands | Section::Params => 4,
        Section::Metadata => META_RECORD,
        Section::States => STATE_RECORD,
        Section::Strings => 1,
    }
}

/// Number of sections in the header table.
pub const SECTIONS: usize = 8;

/// Reads a little-endian `u32` at `off`, or `None` past the end.
#[inline]
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a little-endian `u16` at `off`, or `None` past the end.
#[inline]
pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}
