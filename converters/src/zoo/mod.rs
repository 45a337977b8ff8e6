//! The model zoo: every family is trained here in candle on procedural data and exported to
//! ONNX by the same layer code ([`layers::ZooLayer`]), so trained and exported graphs cannot
//! drift.
//!
//! ```no_run
//! use mote_converters::zoo::{train_gpt, write_gpt_card, GptTrainOptions};
//! let out = std::path::Path::new("models/gpt");
//! let report = train_gpt(out, &GptTrainOptions::default())?;
//! write_gpt_card(out, &report, "")?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod attention;
pub mod autoregressive;
pub mod bert;
mod card_md;
mod char_lm;
pub mod corpus;
pub mod coupling;
pub mod diffusion;
pub mod encdec;
pub mod encoder;
pub mod gan;
pub mod glow;
pub mod gpt;
pub mod layers;
pub mod ldm;
pub mod lm_eval;
pub mod onnx_builder;
pub mod planar;
pub mod rng;
pub mod seq2seq;
pub mod switch;
pub mod t5;
pub mod toy2d;
pub mod tract_run;
mod trainer;
pub mod unet;
pub mod vae;
pub mod xl;

pub use bert::{train_mlm, write_mlm_card, MlmFamily, MlmReport, MlmTrainOptions};
pub use gpt::{train_gpt, write_gpt_card, GptReport, GptTrainOptions};
pub use layers::ZooLayer;
pub use onnx_builder::GraphBuilder;
