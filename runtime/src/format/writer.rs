//! Serialises a model into the `.mote` layout (used by the host converter).

use super::*;
use crate::format::model::TensorId;
use crate::ops::Op;
use crate::tensor::{Desc, MAX_RANK};
use alloc::vec::Vec;

/// Everything the writer needs to know about one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec<'a> {
    /// Dtype, shape, quantisation.
    pub desc: Desc,
    /// Optional name (shown by `mote inspect`).
    pub name: Option<&'a str>,
    /// Arena offset for activations; `None` for weights.
    pub arena_offset: Option<u32>,
    /// Weight bytes (exactly `desc.byte_len()`), for constants.
    pub data: Option<&'a [u8]>,
    /// Per-channel scales along an axis, for per-channel quantised weights.
    pub channel_scales: Option<(u8, &'a [f32])>,
}

/// Incrementally builds a `.mote` file.
#[derive(Debug, Default)]
pub struct Writer {
    tensors: Vec<u8>,
    n_tensors: u32,
    ops: Vec<u8>,
    n_ops: u32,
    entries: Vec<u8>,
    n_entries: u32,
    operands: Vec<u32>,
    params: Vec<u32>,
    metadata: Vec<u32>,
    states: Vec<u32>,
    strings: Vec<u8>,
    weights: Vec<u8>,
    /// Peak arena bytes over all entry points.
    pub arena_bytes: u32,
    /// State region bytes.
    pub state_bytes: u32,
}

fn put(v: &mut Vec<u8>, w: u32) {
    v.extend_from_slice(&w.to_le_bytes());
}

impl Writer {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string, returning its offset.
    pub fn string(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.strings.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.strings.extend_from_slice(bytes);
        off
    }

    /// Appends raw weight bytes at a 16-byte boundary, returning their offset.
    pub fn weight_bytes(&mut self, data: &[u8]) -> u32 {
        while !self.weights.len().is_multiple_of(ALIGN) {
            self.weights.push(0);
        }
        let off = self.weights.len() as u32;
        self.weights.extend_from_slice(data);
        off
    }

    /// Adds a tensor record, returning its id.
    pub fn tensor(&mut self, t: &TensorSpec<'_>) -> TensorId {
        let (storage, offset) = match (t.arena_offset, t.data) {
            (Some(o), _) => (0u8, o),
            (None, Some(d)) => (1u8, self.weight_bytes(d)),
            (None, None) => (1u8, self.weight_bytes(&[])),
        };
        let (axis, scales) = match t.channel_scales {
            Some((axis, s)) => {
                let bytes: Vec<u8> = s.iter().flat_map(|v| v.to_le_bytes()).collect();
                (axis, self.weight_bytes(&bytes))
            }
            None => (0xFF, NONE),
        };
        let name = t.name.map(|n| self.string(n)).unwrap_or(NONE);
        let dims = t.desc.shape.dims();
        let r = &mut self.tensors;
        r.extend_from_slice(&[t.desc.dtype as u8, storage, dims.len() as u8, axis]);
        for k in 0..MAX_RANK {
            put(r, dims.get(k).copied().unwrap_or(0));
        }
        put(r, offset);
        put(r, t.desc.byte_len() as u32);
        put(r, t.desc.quant.scale.to_bits());
        put(r, t.desc.quant.zero_point as u32);
        put(r, scales);
        put(r, name);
        put(r, 0);
        self.n_tensors += 1;
        TensorId(self.n_tensors - 1)
    }

    /// Appends an op; returns its index.
    pub fn op(&mut self, op: &Op, inputs: &[TensorId], output: TensorId) -> u32 {
        let (kind, params) = op.encode();
        let operands = self.operands.len() as u32;
        self.operands.extend(inputs.iter().map(|t| t.0));
        self.operands.push(output.0);
        let p = self.params.len() as u32;
        self.params.extend_from_slice(params.as_slice());
        let r = &mut self.ops;
        r.extend_from_slice(&kind.to_le_bytes());
        r.extend_from_slice(&[inputs.len() as u8, 1]);
        put(r, operands);
        put(r, p);
        r.extend_from_slice(&(params.as_slice().len() as u16).to_le_bytes());
        r.extend_from_slice(&[0, 0]);
        self.n_ops += 1;
        self.n_ops - 1
    }

    /// Number of ops written so far (the next op's index).
    pub fn op_count(&self) -> u32 {
        self.n_ops
    }

    /// Adds an entry point over ops `first_op..first_op + n_ops`.
    pub fn entry(
        &mut self,
        name: &str,
        ops: core::ops::Range<u32>,
        inputs: &[TensorId],
        outputs: &[TensorId],
        advance: Option<u32>,
    ) {
        let name = self.string(name);
        let io = self.operands.len() as u32;
        self.operands.extend(inputs.iter().chain(outputs).map(|t| t.0));
        let r = &mut self.entries;
        put(r, name);
        put(r, ops.start);
        put(r, ops.end - ops.start);
        put(r, io);
        r.extend_from_slice(&(inputs.len() as u16).to_le_bytes());
        r.extend_from_slice(&(outputs.len() as u16).to_le_bytes());
        put(r, if advance.is_some() { ENTRY_ADVANCES } else { 0 });
        put(r, advance.unwrap_or(0));
        put(r, 0);
        self.n_entries += 1;
    }

    /// Adds a named state slot.
    pub fn state_slot(&mut self, name: &str, offset: u32, len: u32) {
        let name = self.string(name);
        self.states.extend_from_slice(&[name, offset, len, 0]);
    }

    /// Adds a metadata key/value pair.
    pub fn metadata(&mut self, key: &str, value: &str) {
        let k = self.string(key);
        let v = self.string(value);
        self.metadata.extend_from_slice(&[k, v]);
    }

    /// Lays out the sections, computes the checksum and returns the file bytes.
    pub fn finish(&self) -> Vec<u8> {
        let words = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|w| w.to_le_bytes()).collect() };
        let sections: [(u32, Vec<u8>); SECTIONS] = [
            (self.n_tensors, self.tensors.clone()),
            (self.n_ops, self.ops.clone()),
            (self.n_entries, self.entries.clone()),
            (self.operands.len() as u32, words(&self.operands)),
            (self.params.len() as u32, words(&self.params)),
            ((self.metadata.len() / 2) as u32, words(&self.metadata)),
            ((self.states.len() / 4) as u32, words(&self.states)),
            (self.strings.len() as u32, self.strings.clone()),
        ];
        let mut out = alloc::vec![0u8; HEADER_LEN];
        let mut table = Vec::new();
        for (count, bytes) in &sections {
            pad(&mut out);
            table.push((*count, out.len() as u32));
            out.extend_from_slice(bytes);
        }
        pad(&mut out);
        let weights_off = out.len() as u32;
        out.extend_from_slice(&self.weights);
        pad(&mut out);
        let file_len = out.len() as u32;

        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[8..12].copy_from_slice(&file_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.arena_bytes.to_le_bytes());
        out[20..24].copy_from_slice(&self.state_bytes.to_le_bytes());
        for (i, (count, off)) in table.iter().enumerate() {
            out[24 + 8 * i..28 + 8 * i].copy_from_slice(&count.to_le_bytes());
            out[28 + 8 * i..32 + 8 * i].copy_from_slice(&off.to_le_bytes());
        }
        out[88..92].copy_from_slice(&weights_off.to_le_bytes());
        out[92..96].copy_from_slice(&(self.weights.len() as u32).to_le_bytes());
        reseal(&mut out);
        out
    }
}

fn pad(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(ALIGN) {
        v.push(0);
    }
}

/// Recomputes the checksum of a `.mote` file in place (tests use it to reach deep validation
/// after mutating a file).
pub fn reseal(file: &mut [u8]) {
    if file.len() >= HEADER_LEN {
        let crc = crc32fast::hash(&file[16..]);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
    }
}
