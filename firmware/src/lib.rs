//! Firmware support for running an embedded `.mote` model from flash.
//!
//! This crate is the placeholder the firmware issue fills with boards, linker scripts and
//! `mote flash`. Today it holds the part every board shares: running a model whose bytes
//! live in flash, with the arena and state in statically sized RAM buffers and no heap.
#![no_std]
#![forbid(unsafe_code)]

use mote::{Error, Model, Session};

/// Runs the `forward` entry of `model_bytes` on token ids, writing real-valued outputs.
///
/// `arena` and `state` are the caller's static buffers; their required sizes are stated by
/// the model header ([`Model::arena_bytes`], [`Model::state_bytes`]).
pub fn run_forward(
    model_bytes: &[u8],
    arena: &mut [u8],
    state: &mut [u8],
    tokens: &[i32],
    output: &mut [f32],
) -> Result<(), Error> {
    let model = Model::parse(model_bytes)?;
    let mut session = Session::new(&model, arena, state)?;
    let forward = model.entry_by_name("forward")?;
    session.set_input_i32(forward, 0, tokens)?;
    session.run(forward)?;
    session.output_f32(forward, 0, output)
}
