//! # mote runtime
//!
//! A `#![no_std]`, allocation-free runtime for `.mote` models: quantised, ahead-of-time
//! planned neural networks for microcontrollers and edge boards.
//!
//! ```
//! # fn demo(bytes: &[u8]) -> Result<(), mote::Error> {
//! let model = mote::Model::parse(bytes)?;          // validates everything once
//! let mut arena = [0u8; 4096];                       // caller-owned memory
//! let mut state = [0u8; 0];
//! let mut session = mote::Session::new(&model, &mut arena, &mut state)?;
//! let entry = model.entry_by_name("forward")?;
//! session.set_input_f32(entry, 0, &[1.0, 2.0])?;
//! session.run(entry)?;
//! let mut y = [0f32; 2];
//! session.output_f32(entry, 0, &mut y)?;
//! # Ok(()) }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod beam;
pub mod diffusion;
pub mod error;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod ops;
pub mod quant;
pub mod rng;
pub mod session;
pub mod tensor;

pub use error::{Error, Result};
pub use format::{EntryId, Model, TensorId};
pub use ops::Op;
pub use session::Session;
pub use tensor::{DType, Desc, Quant, Shape};
