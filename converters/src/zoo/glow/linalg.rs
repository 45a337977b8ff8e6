//! Small dense linear algebra in f64 for the Glow family: the LU factorisation with partial
//! pivoting that parameterises the invertible 1×1 convolution, exact inverses computed at
//! export, a random rotation for its initialisation, and the Cholesky factor behind the
//! full-covariance Gaussian baseline. Matrices are row-major `n × n` slices.
//!
//! ```
//! use mote_converters::zoo::glow::linalg::{inverse, lu, matmul};
//! let a = [4.0, 3.0, 6.0, 3.0];
//! let f = lu(&a, 2).expect("non-singular");
//! let back = matmul(&matmul(&f.p, &f.l, 2), &f.u, 2);
//! assert!(back.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-12));
//! let inv = inverse(&a, 2).expect("non-singular");
//! let eye = matmul(&a, &inv, 2);
//! assert!((eye[0] - 1.0).abs() < 1e-12 && eye[1].abs() < 1e-12);
//! ```

use crate::zoo::rng::SplitMix64;

/// `A = P · L · U`: `P` a permutation matrix, `L` unit lower triangular, `U` upper triangular.
#[derive(Clone, Debug, PartialEq)]
pub struct Lu {
    /// The permutation matrix.
    pub p: Vec<f64>,
    /// Unit lower triangular factor.
    pub l: Vec<f64>,
    /// Upper triangular factor.
    pub u: Vec<f64>,
}

/// The `n × n` identity.
pub fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

/// `a · b` for `n × n` matrices.
pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let v = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += v * b[k * n + j];
            }
        }
    }
    c
}

/// LU factorisation with partial pivoting, `A = P L U`; `None` when `A` is singular (a zero
/// pivot) or not `n × n`.
pub fn lu(a: &[f64], n: usize) -> Option<Lu> {
    if a.len() != n * n {
        return None;
    }
    let mut u = a.to_vec();
    let mut l = identity(n);
    let mut rows: Vec<usize> = (0..n).collect();
    for k in 0..n {
        let piv = (k..n).max_by(|&i, &j| u[i * n + k].abs().total_cmp(&u[j * n + k].abs()))?;
        if u[piv * n + k] == 0.0 {
            return None;
        }
        if piv != k {
            for j in 0..n {
                u.swap(k * n + j, piv * n + j);
            }
            for j in 0..k {
                l.swap(k * n + j, piv * n + j);
            }
            rows.swap(k, piv);
        }
        for i in k + 1..n {
            let f = u[i * n + k] / u[k * n + k];
            l[i * n + k] = f;
            u[i * n + k] = 0.0;
            for j in k + 1..n {
                u[i * n + j] -= f * u[k * n + j];
            }
        }
    }
    // Row k of L·U is row rows[k] of A, so A = P·L·U with P[rows[k]][k] = 1.
    let mut p = vec![0.0; n * n];
    for (k, &r) in rows.iter().enumerate() {
        p[r * n + k] = 1.0;
    }
    Some(Lu { p, l, u })
}

/// The inverse of an `n × n` matrix by Gauss–Jordan elimination with partial pivoting; `None`
/// when it is singular.
pub fn inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    if a.len() != n * n {
        return None;
    }
    let mut m = a.to_vec();
    let mut inv = identity(n);
    for k in 0..n {
        let piv = (k..n).max_by(|&i, &j| m[i * n + k].abs().total_cmp(&m[j * n + k].abs()))?;
        if m[piv * n + k] == 0.0 {
            return None;
        }
        for j in 0..n {
            m.swap(k * n + j, piv * n + j);
            inv.swap(k * n + j, piv * n + j);
        }
        let d = m[k * n + k];
        for j in 0..n {
            m[k * n + j] /= d;
            inv[k * n + j] /= d;
        }
        for i in 0..n {
            if i == k {
                continue;
            }
            let f = m[i * n + k];
            if f == 0.0 {
                continue;
            }
            for j in 0..n {
                m[i * n + j] -= f * m[k * n + j];
                inv[i * n + j] -= f * inv[k * n + j];
            }
        }
    }
    Some(inv)
}

/// A random `n × n` rotation-or-reflection: Gram–Schmidt orthonormalisation of a Gaussian
/// matrix drawn from `rng` (the usual initialisation of Glow's 1×1 convolution).
pub fn random_orthogonal(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
    loop {
        let mut q: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        let mut ok = true;
        for i in 0..n {
            for j in 0..i {
                let dot: f64 = (0..n).map(|k| q[i * n + k] * q[j * n + k]).sum();
                for k in 0..n {
                    q[i * n + k] -= dot * q[j * n + k];
                }
            }
            let norm = (0..n).map(|k| q[i * n + k].powi(2)).sum::<f64>().sqrt();
            if norm < 1e-6 {
                ok = false;
                break;
            }
            for k in 0..n {
                q[i * n + k] /= norm;
            }
        }
        if ok {
            return q;
        }
    }
}

/// The lower Cholesky factor `L` of a symmetric positive-definite `n × n` matrix (`A = L Lᵀ`);
/// `None` when it is not positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    if a.len() != n * n {
        return None;
    }
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L y = b` for lower triangular `L` (forward substitution).
pub fn solve_lower(l: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn lu_reconstructs_pivoted_matrices() {
        let mut r = SplitMix64::new(3);
        for n in [1, 2, 4, 8] {
            let a: Vec<f64> = (0..n * n).map(|_| r.normal()).collect();
            let f = lu(&a, n).unwrap();
            assert!(close(&matmul(&matmul(&f.p, &f.l, n), &f.u, n), &a, 1e-12), "n = {n}");
            for i in 0..n {
                assert_eq!(f.l[i * n + i], 1.0);
                for j in i + 1..n {
                    assert_eq!(f.l[i * n + j], 0.0);
                    assert_eq!(f.u[j * n + i], 0.0);
                }
            }
        }
        // A zero leading entry needs the pivot: [[0, 1], [1, 0]].
        let f = lu(&[0.0, 1.0, 1.0, 0.0], 2).unwrap();
        assert_eq!(f.p, vec![0.0, 1.0, 1.0, 0.0]);
        assert!(lu(&[1.0, 2.0, 2.0, 4.0], 2).is_none(), "singular");
        assert!(lu(&[1.0, 2.0, 3.0], 2).is_none(), "not square");
    }

    #[test]
    fn inverse_and_orthogonal_init() {
        let mut r = SplitMix64::new(5);
        let q = random_orthogonal(6, &mut r);
        let qt: Vec<f64> = (0..36).map(|k| q[(k % 6) * 6 + k / 6]).collect();
        assert!(close(&matmul(&q, &qt, 6), &identity(6), 1e-12));
        let a: Vec<f64> = (0..36).map(|_| r.normal()).collect();
        let inv = inverse(&a, 6).unwrap();
        assert!(close(&matmul(&a, &inv, 6), &identity(6), 1e-10));
        assert!(close(&matmul(&inv, &a, 6), &identity(6), 1e-10));
        assert!(inverse(&[1.0, 2.0, 2.0, 4.0], 2).is_none());
        // |det Q| = 1: the product of |diag U| of its LU factors.
        let f = lu(&q, 6).unwrap();
        let log_det: f64 = (0..6).map(|i| f.u[i * 6 + i].abs().ln()).sum();
        assert!(log_det.abs() < 1e-12, "{log_det}");
    }

    #[test]
    fn cholesky_factors_and_solves() {
        // A = [[4, 2], [2, 3]] = L Lᵀ with L = [[2, 0], [1, √2]].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert!(close(&l, &[2.0, 0.0, 1.0, 2f64.sqrt()], 1e-12));
        let y = solve_lower(&l, &[2.0, 1.0 + 2f64.sqrt()], 2);
        assert!(close(&y, &[1.0, 1.0], 1e-12));
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none(), "indefinite");
    }
}
