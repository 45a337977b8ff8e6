//! One inference API over interchangeable backends: the native `.mote` session, and (with
//! the `tract` feature, on Linux boards) tract running the original ONNX model.
//!
//! ```
//! fn predict(b: &mut impl mote::backend::Backend, x: &[f32], y: &mut [f32]) -> mote::Result<()> {
//!     b.set_input_f32(0, x)?;
//!     b.run()?;
//!     b.output_f32(0, y)
//! }
//! ```

use crate::error::Result;
use crate::format::EntryId;
use crate::session::Session;

/// Set inputs, run, read outputs: what every backend offers.
pub trait Backend {
    /// Writes real values into input `k`.
    fn set_input_f32(&mut self, k: usize, values: &[f32]) -> Result<()>;
    /// Writes integers (token ids) into input `k`.
    fn set_input_i32(&mut self, k: usize, values: &[i32]) -> Result<()>;
    /// Runs the model.
    fn run(&mut self) -> Result<()>;
    /// Reads output `k` as real values.
    fn output_f32(&self, k: usize, out: &mut [f32]) -> Result<()>;
}

/// One entry point of a native session, as a [`Backend`].
pub struct EntryRunner<'s, 'm, 'b> {
    /// The session.
    pub session: &'s mut Session<'m, 'b>,
    /// The entry point it runs.
    pub entry: EntryId,
}

impl Backend for EntryRunner<'_, '_, '_> {
    fn set_input_f32(&mut self, k: usize, values: &[f32]) -> Result<()> {
        self.session.set_input_f32(self.entry, k, values)
    }
    fn set_input_i32(&mut self, k: usize, values: &[i32]) -> Result<()> {
        self.session.set_input_i32(self.entry, k, values)
    }
    fn run(&mut self) -> Result<()> {
        self.session.run(self.entry)
    }
    fn output_f32(&self, k: usize, out: &mut [f32]) -> Result<()> {
        self.session.output_f32(self.entry, k, out)
    }
}

#[cfg(feature = "tract")]
pub use tract_backend::TractBackend;

#[cfg(feature = "tract")]
mod tract_backend {
    use super::Backend;
    use crate::error::{Error, Result};
    use std::path::Path;
    use std::vec;
    use std::vec::Vec;
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::Factoid;

    /// An ONNX model run by tract (CPU/NEON), behind the same [`Backend`] calls.
    pub struct TractBackend {
        plan: std::sync::Arc<TypedRunnableModel>,
        inputs: Vec<Tensor>,
        outputs: TVec<TValue>,
    }

    impl TractBackend {
        /// Loads `onnx` with concrete input shapes (one per model input).
        pub fn load(onnx: &Path, input_shapes: &[&[usize]]) -> Result<Self> {
            let mut model = tract_onnx::onnx().model_for_path(onnx).map_err(|_| Error::Backend)?;
            let mut inputs = Vec::new();
            for (i, shape) in input_shapes.iter().enumerate() {
                let fact = model.input_fact(i).map_err(|_| Error::Backend)?.clone();
                let dt = fact.datum_type.concretize().unwrap_or(f32::datum_type());
                model.set_input_fact(i, InferenceFact::dt_shape(dt, shape.to_vec())).map_err(|_| Error::Backend)?;
                inputs.push(Tensor::zero_dt(dt, shape).map_err(|_| Error::Backend)?);
            }
            let plan = model.into_optimized().and_then(|m| m.into_runnable()).map_err(|_| Error::Backend)?;
            Ok(TractBackend { plan, inputs, outputs: tvec!() })
        }

        fn set<T: Datum + Copy>(&mut self, k: usize, values: &[T]) -> Result<()> {
            let slot = self.inputs.get_mut(k).ok_or(Error::NotFound)?;
            if slot.len() != values.len() {
                return Err(Error::SizeMismatch);
            }
            let src = tract_ndarray::ArrayD::from_shape_vec(slot.shape(), values.to_vec())
                .map_err(|_| Error::SizeMismatch)?;
            let t: Tensor = src.into();
            *slot = t.cast_to_dt(slot.datum_type()).map_err(|_| Error::BadDType)?.into_owned();
            Ok(())
        }
    }

    impl Backend for TractBackend {
        fn set_input_f32(&mut self, k: usize, values: &[f32]) -> Result<()> {
            self.set(k, values)
        }
        fn set_input_i32(&mut self, k: usize, values: &[i32]) -> Result<()> {
            self.set(k, values)
        }
        fn run(&mut self) -> Result<()> {
            let inputs: TVec<TValue> = self.inputs.iter().cloned().map(|t| t.into()).collect();
            self.outputs = self.plan.run(inputs).map_err(|_| Error::Backend)?;
            Ok(())
        }
        fn output_f32(&self, k: usize, out: &mut [f32]) -> Result<()> {
            let t = self.outputs.get(k).ok_or(Error::NotFound)?;
            let t = t.cast_to::<f32>().map_err(|_| Error::BadDType)?;
            let v = t
                .try_as_plain_ram()
                .and_then(|p| p.as_slice::<f32>().map(|s| s.to_vec()))
                .map_err(|_| Error::BadDType)?;
            if v.len() != out.len() {
                return Err(Error::SizeMismatch);
            }
            out.copy_from_slice(&v);
            Ok(())
        }
    }
}
