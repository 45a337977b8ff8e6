//! Nearest-neighbour upsampling of `[N, C, H, W]` by integer factors: every input pixel
//! becomes a `sh × sw` block (ONNX `Resize` in nearest mode with integer scales, PyTorch's
//! `nn.Upsample(scale_factor=k)`).

use super::{arity, dtype_ok, real_in, real_out, shape_ok, view};
use crate::error::{Error, Result};
use crate::tensor::{Desc, Out, Src};

/// Validates the upsampling: rank 4, output = input with H and W multiplied by `scale`.
pub(crate) fn check(scale: [u8; 2], inputs: &[Desc], out: &Desc) -> Result<()> {
    arity(inputs, 1)?;
    let x = &inputs[0];
    dtype_ok(real_in(x.dtype) && real_out(out.dtype))?;
    if scale.contains(&0) {
        return Err(Error::BadParams);
    }
    shape_ok(x.shape.rank() == 4 && out.shape.rank() == 4)?;
    let (i, o) = (x.shape.dims(), out.shape.dims());
    shape_ok(o[..2] == i[..2] && o[2] == i[2] * scale[0] as u32 && o[3] == i[3] * scale[1] as u32)
}

/// `out[n, c, y, x] = in[n, c, y / sh, x / sw]`.
pub(crate) fn run(scale: [u8; 2], inputs: &[Src<'_>], out: &mut Out<'_>) -> Result<()> {
    let x = view(inputs, 0)?;
    let d = x.desc.shape.dims();
    let (planes, h, w) = (d[0] as usize * d[1] as usize, d[2] as usize, d[3] as usize);
    let (sh, sw) = (scale[0] as usize, scale[1] as usize);
    let (oh, ow) = (h * sh, w * sw);
    for p in 0..planes {
        for y in 0..oh {
            for q in 0..ow {
                out.set((p * oh + y) * ow + q, x.get((p * h + y / sh) * w + q / sw));
            }
        }
    }
    Ok(())
}
