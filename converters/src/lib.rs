//! Host converters for mote: ONNX import, fusion, quantisation, memory planning, `.mote`
//! emission, verification against tract, and the model zoo.

pub mod array;
pub mod cli;
pub mod convert;
pub mod emit;
pub mod encoder_split;
pub mod eval;
pub mod family;
pub mod flash;
pub mod host;
pub mod import;
pub mod ir;
pub mod passes;
pub mod plan;
pub mod report;
pub mod state_io;
pub mod tokenizer;
pub mod verify;
pub mod zoo;
