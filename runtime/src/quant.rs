//! TFLite int8 fixed-point requantisation.
//!
//! A real multiplier (for example `s_in * s_w / s_out`) is encoded once, on the host, as a
//! Q31 integer plus a power-of-two shift ([`quantize_multiplier`]). At run time
//! [`multiply_by_quantized_multiplier`] applies it with integer arithmetic only
//! (gemmlowp's `SaturatingRoundingDoublingHighMul` followed by `RoundingDivideByPOT`), so
//! the result is bit-exact on every architecture.
//!
//! ```
//! use mote::quant::{multiply_by_quantized_multiplier, quantize_multiplier};
//! let (m, shift) = quantize_multiplier(0.75);
//! assert_eq!(multiply_by_quantized_multiplier(100, m, shift), 75);
//! ```

/// Encodes `real` as `(multiplier, shift)` with `real ≈ multiplier · 2^(shift - 31)`, exactly
/// like TFLite's `QuantizeMultiplier`.
///
/// - `multiplier` is a Q31 fixed-point value with `|multiplier| ∈ [2^30, 2^31)`
///   (`frexp`, then round half away from zero; a mantissa that rounds up to `2^31` in
///   magnitude is halved and the shift incremented — TFLite does this for positive reals only,
///   negative reals are not used by the int8 spec and are handled symmetrically here).
/// - `shift` is positive for a left shift and negative for a right shift.
/// - `real == 0`, non-finite `real`, and magnitudes below `2^-32` (shift `< -31`) give
///   `(0, 0)`.
/// - Magnitudes of `2^30` or more saturate to `(±(2^31 - 1), 30)` (TFLite's single-rounding
///   clamp), so the shift is always in `-31..=30`.
///
/// ```
/// use mote::quant::quantize_multiplier;
/// assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
/// assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
/// assert_eq!(quantize_multiplier(0.0), (0, 0));
/// ```
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real == 0.0 || !real.is_finite() {
        return (0, 0);
    }
    let (q, mut shift) = libm::frexp(real);
    // |q| is in [0.5, 1), so |q_fixed| <= 2^31: no overflow.
    let mut q_fixed = libm::round(q * (1i64 << 31) as f64) as i64;
    if q_fixed == 1i64 << 31 || q_fixed == -(1i64 << 31) {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    if shift > 30 {
        let sat = if real < 0.0 { -i32::MAX } else { i32::MAX };
        return (sat, 30);
    }
    (q_fixed as i32, shift)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `round(a · b / 2^31)`, rounding half away
/// from zero, saturating the single overflowing case `a == b == i32::MIN` to `i32::MAX`.
///
/// ```
/// use mote::quant::saturating_rounding_doubling_high_mul as srdhm;
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// assert_eq!(srdhm(1 << 20, 1 << 30), 1 << 19);
/// ```
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Truncating division, as in C++. |ab| < 2^62, so the quotient fits in i32.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `round(x / 2^exponent)`, rounding half away from zero.
///
/// Exponents above 62 behave like 62 (the result is then 0 for every `x`).
///
/// ```
/// use mote::quant::rounding_divide_by_pot;
/// assert_eq!(rounding_divide_by_pot(5, 1), 3);
/// assert_eq!(rounding_divide_by_pot(-5, 1), -3);
/// assert_eq!(rounding_divide_by_pot(-6, 2), -2);
/// ```
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let e = exponent.min(62);
    let x = x as i64;
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i64;
    ((x >> e) + (remainder > threshold) as i64) as i32
}

/// Applies a multiplier from [`quantize_multiplier`]:
/// `≈ round(x · multiplier · 2^(shift - 31))`
/// with TFLite's (double-rounding) `MultiplyByQuantizedMultiplier`.
///
/// A positive `shift` first multiplies `x` by `2^shift`; that product saturates to the i32
/// range (TFLite leaves the overflow undefined). Any `shift` is accepted without panicking.
///
/// ```
/// use mote::quant::{multiply_by_quantized_multiplier, quantize_multiplier};
/// let (m, s) = quantize_multiplier(1.0 / 3.0);
/// assert_eq!(multiply_by_quantized_multiplier(300, m, s), 100);
/// assert_eq!(multiply_by_quantized_multiplier(-300, m, s), -100);
/// // Two roundings (high mul, then shift) can land one step from round(x · real):
/// assert_eq!(multiply_by_quantized_multiplier(-301, m, s), -101);
/// ```
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31) as u32;
    let right = if shift < 0 { shift.unsigned_abs() } else { 0 };
    let shifted = ((x as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact `round_half_away(x * real)` clamped to i32, via the exact binary expansion of
    /// `real` and i128 arithmetic.
    fn exact(x: i32, real: f64) -> i64 {
        let bits = real.to_bits();
        let neg = bits >> 63 == 1;
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = (bits & ((1u64 << 52) - 1)) as i128;
        let (mant, e) = if exp == 0 { (frac, -1074) } else { (frac | 1 << 52, exp - 1075) };
        let mut num = x as i128 * mant;
        if neg {
            num = -num;
        }
        let r = if e >= 0 {
            if e > 40 {
                num.signum() * (1i128 << 100)
            } else {
                num << e
            }
        } else {
            let d = -e;
            if d > 120 {
                0
            } else {
                let half = 1i128 << (d - 1);
                let q = num.abs() + half;
                num.signum() * (q >> d)
            }
        };
        r.clamp(i32::MIN as i128, i32::MAX as i128) as i64
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn known_tflite_vectors() {
        let cases: [(f64, (i32, i32)); 14] = [
            (-4.0, (-1073741824, 3)),
            (-1.0, (-1073741824, 1)),
            (-0.5, (-1073741824, 0)),
            (-0.125, (-1073741824, -2)),
            (0.0, (0, 0)),
            (0.125, (1073741824, -2)),
            (0.25, (1073741824, -1)),
            (0.5, (1073741824, 0)),
            (1.0, (1073741824, 1)),
            (4.0, (1073741824, 3)),
            (0.6, (1288490189, 0)),
            (libm::ldexp(1.0, -31), (1073741824, -30)),
            (libm::ldexp(1.0, -32), (1073741824, -31)),
            (libm::ldexp(1.0, -33), (0, 0)),
        ];
        for (real, want) in cases {
            assert_eq!(quantize_multiplier(real), want, "real = {real}");
        }
    }

    #[test]
    fn mantissa_rounding_up_to_two_pow_31_is_renormalised() {
        // 1 - 2^-40 has a mantissa that rounds to exactly 2^31.
        assert_eq!(quantize_multiplier(1.0 - libm::ldexp(1.0, -40)), (1 << 30, 1));
        assert_eq!(quantize_multiplier(-(1.0 - libm::ldexp(1.0, -40))), (-(1 << 30), 1));
    }

    #[test]
    fn huge_and_non_finite_reals_saturate_or_vanish() {
        assert_eq!(quantize_multiplier(libm::ldexp(1.0, 30)), (i32::MAX, 30));
        assert_eq!(quantize_multiplier(1e300), (i32::MAX, 30));
        assert_eq!(quantize_multiplier(-1e300), (-i32::MAX, 30));
        assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
        assert_eq!(quantize_multiplier(f64::INFINITY), (0, 0));
        assert_eq!(quantize_multiplier(1e-300), (0, 0));
        let (m, s) = quantize_multiplier(libm::ldexp(1.0, 29) * 1.5);
        assert_eq!((m, s), (3 << 29, 30));
    }

    #[test]
    fn multiplier_is_normalised_and_close_to_real() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let e = (rng.next() % 60) as i32 - 31;
            let real = libm::ldexp(0.5 + 0.5 * rng.unit(), e);
            let (m, s) = quantize_multiplier(real);
            assert!((-31..=30).contains(&s));
            assert!(m >= 1 << 30, "m = {m}");
            let back = m as f64 * libm::ldexp(1.0, s - 31);
            assert!(libm::fabs(back - real) <= libm::ldexp(1.0, s - 32), "{real} {back}");
        }
    }

    #[test]
    fn multiply_matches_exact_rounding_within_one() {
        let mut rng = Rng(0xfeed_beef_0bad_cafe);
        let mut checked = 0;
        for _ in 0..200_000 {
            let e = (rng.next() % 52) as i32 - 31; // reals in [2^-32, 2^20)
            let real = libm::ldexp(0.5 + 0.5 * rng.unit(), e);
            let x = match rng.next() % 3 {
                0 => (rng.next() as i32) >> (rng.next() % 32),
                1 => (rng.next() % 65536) as i32 - 32768,
                _ => rng.next() as i32,
            };
            let want = exact(x, real);
            if want.abs() >= 1 << 30 {
                continue; // beyond the range where the contract applies
            }
            let (m, s) = quantize_multiplier(real);
            let got = multiply_by_quantized_multiplier(x, m, s) as i64;
            assert!((got - want).abs() <= 1, "x={x} real={real} got={got} want={want}");
            checked += 1;
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn every_shift_from_minus_31_to_30_is_handled() {
        for shift in -31..=30 {
            for &x in &[0, 1, -1, 7, -7, 1000, -1000, 123_456, i32::MAX, i32::MIN] {
                let m = 1 << 30; // 0.5 in Q31
                let real = libm::ldexp(1.0, shift - 1);
                let got = multiply_by_quantized_multiplier(x, m, shift) as i64;
                let want = exact(x, real);
                if shift <= 0 {
                    assert!((got - want).abs() <= 1, "x={x} shift={shift} {got} {want}");
                } else if want.abs() < 1 << 30 {
                    assert_eq!(got, want, "x={x} shift={shift}");
                }
            }
        }
    }

    #[test]
    fn saturation_edges() {
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(multiply_by_quantized_multiplier(i32::MIN, i32::MIN, 0), i32::MAX);
        assert_eq!(multiply_by_quantized_multiplier(i32::MIN, i32::MIN, -1), 1 << 30);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX), i32::MAX - 1);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX), i32::MIN + 1);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, 1 << 30), -(1 << 30));
        // A left shift that would overflow saturates instead of wrapping.
        assert_eq!(multiply_by_quantized_multiplier(i32::MAX, i32::MAX, 31), i32::MAX - 1);
        assert_eq!(multiply_by_quantized_multiplier(i32::MIN, i32::MAX, 30), i32::MIN + 1);
        // Out-of-contract shifts never panic.
        assert_eq!(multiply_by_quantized_multiplier(i32::MIN, i32::MAX, i32::MIN), 0);
        assert_eq!(multiply_by_quantized_multiplier(5, i32::MAX, i32::MAX), i32::MAX - 1);
    }

    #[test]
    fn rounding_divide_is_half_away_from_zero() {
        for x in -1000..=1000 {
            for e in 0..12u32 {
                let want = libm::round(x as f64 / (1u64 << e) as f64) as i32;
                assert_eq!(rounding_divide_by_pot(x, e), want, "x={x} e={e}");
            }
        }
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 32), -1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 33), 0);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 200), 0);
    }
}
