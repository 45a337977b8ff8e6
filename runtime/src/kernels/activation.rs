//! Scalar math of the element-wise ops, with `libm` so results are bit-identical everywhere.
//!
//! The converter can build int8 lookup tables from these same functions.

use crate::ops::{BinaryOp, UnaryOp};

/// `1/sqrt(2)`.
const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// `sqrt(2/pi)` for the tanh approximation of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// Applies a unary op to one real value.
///
/// ```
/// use mote::kernels::unary_f32;
/// use mote::ops::UnaryOp;
/// assert_eq!(unary_f32(UnaryOp::Relu, -2.0), 0.0);
/// assert_eq!(unary_f32(UnaryOp::Sigmoid, 0.0), 0.5);
/// ```
#[inline]
pub fn unary_f32(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Gelu => 0.5 * x * (1.0 + libm::erff(x * FRAC_1_SQRT_2)),
        UnaryOp::GeluTanh => {
            let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            0.5 * x * (1.0 + libm::tanhf(inner))
        }
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Tanh => libm::tanhf(x),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Exp => libm::expf(x),
        UnaryOp::Sqrt => libm::sqrtf(x),
        UnaryOp::Neg => -x,
        UnaryOp::Erf => libm::erff(x),
        UnaryOp::Abs => libm::fabsf(x),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Identity => x,
        UnaryOp::Sin => libm::sinf(x),
        UnaryOp::Cos => libm::cosf(x),
        UnaryOp::Log => libm::logf(x),
        // max(x, 0) + ln(1 + e^-|x|): exact form, no overflow for large |x|.
        UnaryOp::Softplus => x.max(0.0) + libm::log1pf(libm::expf(-libm::fabsf(x))),
    }
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

/// Applies a binary op to two real values.
///
/// ```
/// use mote::kernels::binary_f32;
/// use mote::ops::BinaryOp;
/// assert_eq!(binary_f32(BinaryOp::Pow, 2.0, 10.0), 1024.0);
/// assert_eq!(binary_f32(BinaryOp::Min, 2.0, -1.0), -1.0);
/// ```
#[inline]
pub fn binary_f32(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => libm::fmaxf(a, b),
        BinaryOp::Min => libm::fminf(a, b),
        BinaryOp::Pow => libm::powf(a, b),
    }
}
