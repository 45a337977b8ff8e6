//! Element-wise binary and unary operations and their parameter codes.

use crate::error::{Error, Result};

/// Element-wise binary operations (NumPy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum BinaryOp {
    /// `a + b`
    Add = 0,
    /// `a - b`
    Sub = 1,
    /// `a * b`
    Mul = 2,
    /// `a / b`
    Div = 3,
    /// `max(a, b)`
    Max = 4,
    /// `min(a, b)`
    Min = 5,
    /// `a ^ b`
    Pow = 6,
}

/// Element-wise unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum UnaryOp {
    /// `max(x, 0)`
    Relu = 0,
    /// Exact GELU: `x * Φ(x)` with `erf`.
    Gelu = 1,
    /// GELU, tanh approximation.
    GeluTanh = 2,
    /// `x * sigmoid(x)`
    Silu = 3,
    /// Hyperbolic tangent.
    Tanh = 4,
    /// Logistic sigmoid.
    Sigmoid = 5,
    /// `e^x`
    Exp = 6,
    /// Square root.
    Sqrt = 7,
    /// `-x`
    Neg = 8,
    /// Error function.
    Erf = 9,
    /// `|x|`
    Abs = 10,
    /// `1 / x`
    Reciprocal = 11,
    /// Copy with dtype/quantisation conversion (quantise, dequantise, requantise, cast).
    Identity = 12,
    /// Sine (radians).
    Sin = 13,
    /// Cosine (radians).
    Cos = 14,
    /// Natural logarithm (flows' log-determinants).
    Log = 15,
    /// `ln(1 + e^x)`, computed without overflow.
    Softplus = 16,
}

impl BinaryOp {
    pub(super) fn from_u32(v: u32) -> Result<Self> {
        use BinaryOp::*;
        Ok(match v {
            0 => Add,
            1 => Sub,
            2 => Mul,
            3 => Div,
            4 => Max,
            5 => Min,
            6 => Pow,
            _ => return Err(Error::BadParams),
        })
    }
}

impl UnaryOp {
    pub(super) fn from_u32(v: u32) -> Result<Self> {
        use UnaryOp::*;
        Ok(match v {
            0 => Relu,
            1 => Gelu,
            2 => GeluTanh,
            3 => Silu,
            4 => Tanh,
            5 => Sigmoid,
            6 => Exp,
            7 => Sqrt,
            8 => Neg,
            9 => Erf,
            10 => Abs,
            11 => Reciprocal,
            12 => Identity,
            13 => Sin,
            14 => Cos,
            15 => Log,
            16 => Softplus,
            _ => return Err(Error::BadParams),
        })
    }
}
