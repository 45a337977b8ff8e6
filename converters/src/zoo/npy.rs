//! Writing `.npy` files (C order) with `npyz`.
//!
//! ```
//! let dir = std::env::temp_dir().join("mote_npy_doc");
//! std::fs::create_dir_all(&dir)?;
//! mote_converters::zoo::npy::write_i64(&dir.join("a.npy"), &[1, 3], &[1, 2, 3])?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use npyz::WriterBuilder;

fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) -> Result<()> {
    ensure!(
        shape.iter().product::<u64>() as usize == data.len(),
        "{}: shape {shape:?} does not hold {} values",
        path.display(),
        data.len()
    );
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(BufWriter::new(file)).begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(())
}

/// Writes an int64 array.
pub fn write_i64(path: &Path, shape: &[u64], data: &[i64]) -> Result<()> {
    write(path, shape, data)
}

/// Writes a float32 array.
pub fn write_f32(path: &Path, shape: &[u64], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}
