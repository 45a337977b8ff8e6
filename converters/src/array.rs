//! Host-side n-d arrays and their `.npy` interchange (via `npyz`).

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Element data of an [`Array`].
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Real values.
    F32(Vec<f32>),
    /// Integers (token ids, indices).
    I64(Vec<i64>),
}

/// A dense, C-ordered array.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Data,
}

impl Array {
    /// A real-valued array.
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Self {
        Array { shape, data: Data::F32(v) }
    }

    /// An integer array.
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Self {
        Array { shape, data: Data::I64(v) }
    }

    /// Values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads a `.npy` file of f32/f64/f16 or any integer/bool type.
    pub fn read_npy(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let npy =
            npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        if npy.order() != npyz::Order::C {
            bail!("{}: Fortran-ordered arrays are not supported; save with C order", path.display());
        }
        let descr = match npy.dtype() {
            npyz::DType::Plain(t) => t.to_string(),
            other => bail!("{}: unsupported dtype {other:?}", path.display()),
        };
        let ctx = || format!("{}: cannot decode {descr} data", path.display());
        let data = match descr.trim_start_matches(['<', '|', '=']) {
            "f4" => Data::F32(npy.into_vec::<f32>().with_context(ctx)?),
            "f8" => Data::F32(npy.into_vec::<f64>().with_context(ctx)?.into_iter().map(|x| x as f32).collect()),
            "i8" => Data::I64(npy.into_vec::<i64>().with_context(ctx)?),
            "i4" => Data::I64(npy.into_vec::<i32>().with_context(ctx)?.into_iter().map(i64::from).collect()),
            "i2" => Data::I64(npy.into_vec::<i16>().with_context(ctx)?.into_iter().map(i64::from).collect()),
            "i1" => Data::I64(npy.into_vec::<i8>().with_context(ctx)?.into_iter().map(i64::from).collect()),
            "u1" | "b1" => Data::I64(npy.into_vec::<u8>().with_context(ctx)?.into_iter().map(i64::from).collect()),
            _ => bail!("{}: unsupported dtype '{descr}' (use float32 or an integer type)", path.display()),
        };
        let a = Array { shape, data };
        let n = match &a.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        };
        if n != a.len() {
            bail!("{}: header promises {} values, file holds {n}", path.display(), a.len());
        }
        Ok(a)
    }

    /// Writes a `.npy` file: float32, or integers in the narrowest of int8/16/32/64 that holds
    /// every value (token ids and masks stay small on disk; [`Array::read_npy`] widens back).
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let shape: Vec<u64> = self.shape.iter().map(|&d| d as u64).collect();
        let out = BufWriter::new(file);
        match &self.data {
            Data::F32(v) => {
                let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(out).begin_nd()?;
                w.extend(v.iter().copied())?;
                w.finish()?;
            }
            Data::I64(v) => {
                let fits = |lo: i64, hi: i64| v.iter().all(|x| (lo..=hi).contains(x));
                if fits(i8::MIN.into(), i8::MAX.into()) {
                    write_ints(out, &shape, v.iter().map(|&x| x as i8))?;
                } else if fits(i16::MIN.into(), i16::MAX.into()) {
                    write_ints(out, &shape, v.iter().map(|&x| x as i16))?;
                } else if fits(i32::MIN.into(), i32::MAX.into()) {
                    write_ints(out, &shape, v.iter().map(|&x| x as i32))?;
                } else {
                    write_ints(out, &shape, v.iter().copied())?;
                }
            }
        }
        Ok(())
    }
}

/// Writes `values` with their own dtype.
fn write_ints<T: npyz::Serialize + npyz::AutoSerialize>(
    out: BufWriter<File>,
    shape: &[u64],
    values: impl Iterator<Item = T>,
) -> Result<()> {
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(out).begin_nd()?;
    w.extend(values)?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_the_narrowest_dtype() {
        let dir = std::env::temp_dir().join(format!("mote_array_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (values, descr) in [
            (vec![0i64, 5, -100, 127], "i1"),
            (vec![0, 300, -2], "i2"),
            (vec![70_000, -1], "i4"),
            (vec![1 << 40, 3], "i8"),
        ] {
            let a = Array::i64(vec![values.len()], values);
            let path = dir.join(format!("{descr}.npy"));
            a.write_npy(&path).unwrap();
            assert_eq!(Array::read_npy(&path).unwrap(), a);
            let bytes = std::fs::read(&path).unwrap();
            assert!(String::from_utf8_lossy(&bytes).contains(descr), "{descr}");
        }
        let f = Array::f32(vec![2], vec![1.5, -2.0]);
        f.write_npy(&dir.join("f.npy")).unwrap();
        assert_eq!(Array::read_npy(&dir.join("f.npy")).unwrap(), f);
    }
}
