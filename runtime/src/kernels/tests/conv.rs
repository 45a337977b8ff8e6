//! Convolution and transposed convolution against naive f64 references: `Conv` summed per
//! output, `ConvTranspose` scattered from each input (the kernel gathers instead).

use std::vec;
use std::vec::Vec;

use super::*;
use crate::ops::Conv;

struct Case {
    conv: Conv,
    x: [u32; 4],
    w: [u32; 4],
    out: [u32; 4],
}

fn idx(d: &[u32; 4], a: usize, b: usize, c: usize, e: usize) -> usize {
    ((a * d[1] as usize + b) * d[2] as usize + c) * d[3] as usize + e
}

/// Direct convolution or the scatter form of its transpose, in f64.
fn reference(case: &Case, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
    let (xd, wd, od) = (&case.x, &case.w, &case.out);
    let c = &case.conv;
    let g = c.groups as usize;
    let mut out = vec![0.0f64; od.iter().product::<u32>() as usize];
    for n in 0..od[0] as usize {
        for m in 0..od[1] as usize {
            for y in 0..od[2] as usize {
                for q in 0..od[3] as usize {
                    out[idx(od, n, m, y, q)] = bias[m] as f64;
                }
            }
        }
    }
    let (cg, mg) = (xd[1] as usize / g, od[1] as usize / g);
    let (kh, kw) = (wd[2] as usize, wd[3] as usize);
    let at = |v: usize, i: usize, s: u8, d: u8, p: u8| v as isize * s as isize - p as isize + (i * d as usize) as isize;
    for n in 0..xd[0] as usize {
        for grp in 0..g {
            for ci in 0..cg {
                for oc in 0..mg {
                    let (cin, m) = (grp * cg + ci, grp * mg + oc);
                    for i in 0..kh {
                        for j in 0..kw {
                            if c.transposed {
                                // Input pixel (y, q) adds x·w at output (y·s − p + i·d, …).
                                for y in 0..xd[2] as usize {
                                    for q in 0..xd[3] as usize {
                                        let (oy, ox) = (
                                            at(y, i, c.stride[0], c.dilation[0], c.pads[0]),
                                            at(q, j, c.stride[1], c.dilation[1], c.pads[1]),
                                        );
                                        if oy >= 0 && ox >= 0 && (oy as u32) < od[2] && (ox as u32) < od[3] {
                                            out[idx(od, n, m, oy as usize, ox as usize)] +=
                                                x[idx(xd, n, cin, y, q)] as f64 * w[idx(wd, cin, oc, i, j)] as f64;
                                        }
                                    }
                                }
                            } else {
                                for y in 0..od[2] as usize {
                                    for q in 0..od[3] as usize {
                                        let (iy, ix) = (
                                            at(y, i, c.stride[0], c.dilation[0], c.pads[0]),
                                            at(q, j, c.stride[1], c.dilation[1], c.pads[1]),
                                        );
                                        if iy >= 0 && ix >= 0 && (iy as u32) < xd[2] && (ix as u32) < xd[3] {
                                            out[idx(od, n, m, y, q)] += x[idx(xd, n, cin, iy as usize, ix as usize)]
                                                as f64
                                                * w[idx(wd, m, ci, i, j)] as f64;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn conv(transposed: bool, stride: [u8; 2], dilation: [u8; 2], pads: [u8; 4], groups: u16) -> Conv {
    Conv { transposed, has_bias: true, stride, dilation, pads, groups }
}

#[test]
fn conv_and_transposed_conv_match_naive_references() {
    let cases = [
        // 3x3 "same" conv, stride 1.
        Case {
            conv: conv(false, [1, 1], [1, 1], [1, 1, 1, 1], 1),
            x: [2, 3, 6, 5],
            w: [4, 3, 3, 3],
            out: [2, 4, 6, 5],
        },
        // Strided, asymmetric padding, dilated, grouped.
        Case {
            conv: conv(false, [2, 1], [1, 2], [0, 2, 1, 1], 2),
            x: [1, 4, 7, 6],
            w: [6, 2, 3, 2],
            out: [1, 6, 3, 7],
        },
        // Depthwise 2x2 stride 2.
        Case {
            conv: conv(false, [2, 2], [1, 1], [0, 0, 0, 0], 3),
            x: [1, 3, 4, 4],
            w: [3, 1, 2, 2],
            out: [1, 3, 2, 2],
        },
        // DCGAN-style upsampling: 4x4 kernel, stride 2, padding 1 doubles the size.
        Case { conv: conv(true, [2, 2], [1, 1], [1, 1, 1, 1], 1), x: [2, 3, 4, 4], w: [3, 5, 4, 4], out: [2, 5, 8, 8] },
        // 3x3 stride 2 pad 1 with output_padding 1 (4 → 8 rows, 3 → 6 columns), grouped.
        Case { conv: conv(true, [2, 2], [1, 1], [1, 1, 1, 1], 2), x: [1, 4, 4, 3], w: [4, 3, 3, 3], out: [1, 6, 8, 6] },
        // Dilated transposed conv, no padding.
        Case { conv: conv(true, [1, 2], [2, 1], [0, 0, 0, 0], 1), x: [1, 2, 3, 3], w: [2, 2, 2, 3], out: [1, 2, 5, 7] },
    ];
    let mut rng = Rng(17);
    for (k, case) in cases.iter().enumerate() {
        let n = |d: &[u32; 4]| d.iter().product::<u32>() as usize;
        let x = rng.vec(n(&case.x), -2.0, 2.0);
        let w = rng.vec(n(&case.w), -1.0, 1.0);
        let bias = rng.vec(case.out[1] as usize, -0.5, 0.5);
        let got = run(
            &Op::Conv(case.conv),
            &[&f32t(&case.x, &x), &f32t(&case.w, &w), &f32t(&[case.out[1]], &bias)],
            desc(DType::F32, &case.out),
        )
        .unwrap_or_else(|e| panic!("case {k}: {e:?}"));
        assert_close(&got.values(), &reference(case, &x, &w, &bias), 1e-5, 1e-5);
    }
}

#[test]
fn inconsistent_convolutions_are_rejected() {
    let x = desc(DType::F32, &[1, 3, 6, 6]);
    let w = desc(DType::F32, &[4, 3, 3, 3]);
    let b = desc(DType::F32, &[4]);
    let c = conv(false, [1, 1], [1, 1], [1, 1, 1, 1], 1);
    assert!(check(&Op::Conv(c), &[x, w, b], &desc(DType::F32, &[1, 4, 6, 6]), 0).is_ok());
    let wrong_size = desc(DType::F32, &[1, 4, 5, 6]);
    assert!(check(&Op::Conv(c), &[x, w, b], &wrong_size, 0).is_err(), "output size");
    let grouped = Conv { groups: 2, ..c };
    assert!(
        check(&Op::Conv(grouped), &[x, w, b], &desc(DType::F32, &[1, 4, 6, 6]), 0).is_err(),
        "3 channels in 2 groups"
    );
    let zero_stride = Conv { stride: [0, 1], ..c };
    assert!(check(&Op::Conv(zero_stride), &[x, w, b], &desc(DType::F32, &[1, 4, 6, 6]), 0).is_err(), "stride 0");
    let up = Conv { transposed: true, stride: [2, 2], ..c };
    let wt = desc(DType::F32, &[3, 4, 3, 3]);
    // 6 → 11 rows minimum, 12 with output_padding 1; 13 is too many.
    assert!(check(&Op::Conv(up), &[x, wt, b], &desc(DType::F32, &[1, 4, 12, 11]), 0).is_ok());
    assert!(check(&Op::Conv(up), &[x, wt, b], &desc(DType::F32, &[1, 4, 13, 11]), 0).is_err(), "too tall");
}

#[test]
fn nearest_upsampling_repeats_each_pixel_into_a_block() {
    let x: Vec<f32> = (0..2 * 3 * 2).map(|v| v as f32).collect();
    let got = run(&Op::Upsample { scale: [2, 3] }, &[&f32t(&[1, 2, 3, 2], &x)], desc(DType::F32, &[1, 2, 6, 6]))
        .unwrap()
        .values();
    let mut want = Vec::new();
    for c in 0..2 {
        for y in 0..6 {
            for q in 0..6 {
                want.push(x[(c * 3 + y / 2) * 2 + q / 3] as f64);
            }
        }
    }
    assert_close(&got, &want, 0.0, 0.0);
    let wrong = desc(DType::F32, &[1, 2, 6, 5]);
    assert!(run(&Op::Upsample { scale: [2, 3] }, &[&f32t(&[1, 2, 3, 2], &x)], wrong).is_err());
}

/// The direct loop nest in f32 (the kernel before tiling): per output, the bias, then
/// `acc += x·w` over (input channel, kernel row, kernel column) in order.
fn direct(case: &Case, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let (xd, wd, od, c) = (&case.x, &case.w, &case.out, &case.conv);
    let (ch, h, wdt) = (xd[1] as isize, xd[2] as isize, xd[3] as isize);
    let (kh, kw) = (wd[2] as isize, wd[3] as isize);
    let g = c.groups as isize;
    let (cg, mg) = (ch / g, od[1] as isize / g);
    let (s, d, p) = (c.stride.map(|v| v as isize), c.dilation.map(|v| v as isize), c.pads.map(|v| v as isize));
    let mut out = Vec::new();
    for n in 0..od[0] as isize {
        for o in 0..od[1] as isize {
            let (grp, oc) = (o / mg, o % mg);
            for y in 0..od[2] as isize {
                for q in 0..od[3] as isize {
                    let mut acc = bias[o as usize];
                    for ci in 0..cg {
                        let cin = grp * cg + ci;
                        for i in 0..kh {
                            for j in 0..kw {
                                let (iy, ix) = if c.transposed {
                                    let (ty, tx) = (y + p[0] - i * d[0], q + p[1] - j * d[1]);
                                    if ty < 0 || tx < 0 || ty % s[0] != 0 || tx % s[1] != 0 {
                                        continue;
                                    }
                                    (ty / s[0], tx / s[1])
                                } else {
                                    (y * s[0] - p[0] + i * d[0], q * s[1] - p[1] + j * d[1])
                                };
                                if iy < 0 || ix < 0 || iy >= h || ix >= wdt {
                                    continue;
                                }
                                let tap = if c.transposed { (cin * mg + oc) * kh + i } else { (o * cg + ci) * kh + i };
                                acc += x[(((n * ch + cin) * h + iy) * wdt + ix) as usize] * w[(tap * kw + j) as usize];
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

#[test]
fn the_tiled_kernel_is_bit_exact_with_the_direct_loops_for_every_input_dtype() {
    let cases = [
        Case {
            conv: conv(false, [1, 1], [1, 1], [1, 1, 1, 1], 1),
            x: [2, 3, 6, 5],
            w: [4, 3, 3, 3],
            out: [2, 4, 6, 5],
        },
        Case {
            conv: conv(false, [2, 1], [1, 2], [0, 2, 1, 1], 2),
            x: [1, 4, 7, 6],
            w: [6, 2, 3, 2],
            out: [1, 6, 3, 7],
        },
        // Wider than a tile (300 columns) and several tiles of rows (16 × 40 = 640 outputs).
        Case {
            conv: conv(false, [1, 1], [1, 1], [1, 1, 1, 1], 1),
            x: [1, 2, 3, 300],
            w: [2, 2, 3, 3],
            out: [1, 2, 3, 300],
        },
        Case {
            conv: conv(false, [1, 2], [1, 1], [1, 0, 1, 1], 1),
            x: [1, 2, 16, 80],
            w: [3, 2, 3, 3],
            out: [1, 3, 16, 40],
        },
        Case { conv: conv(true, [2, 2], [1, 1], [1, 1, 1, 1], 1), x: [2, 3, 4, 4], w: [3, 5, 4, 4], out: [2, 5, 8, 8] },
        Case { conv: conv(true, [2, 2], [1, 1], [1, 1, 1, 1], 2), x: [1, 4, 4, 3], w: [4, 3, 3, 3], out: [1, 6, 8, 6] },
        Case { conv: conv(true, [1, 2], [2, 1], [0, 0, 0, 0], 1), x: [1, 2, 3, 3], w: [2, 2, 2, 3], out: [1, 2, 5, 7] },
        Case {
            conv: conv(true, [3, 2], [1, 1], [2, 1, 0, 0], 1),
            x: [1, 2, 5, 140],
            w: [2, 3, 4, 3],
            out: [1, 3, 15, 280],
        },
    ];
    let mut rng = Rng(29);
    for (k, case) in cases.iter().enumerate() {
        let n = |d: &[u32; 4]| d.iter().product::<u32>() as usize;
        let x = rng.vec(n(&case.x), -2.0, 2.0);
        let w = rng.vec(n(&case.w), -1.0, 1.0);
        let bias = rng.vec(case.out[1] as usize, -0.5, 0.5);
        let b = f32t(&[case.out[1]], &bias);
        let inputs = [
            ("f32 x, f32 w", f32t(&case.x, &x), f32t(&case.w, &w)),
            ("int8 x, f16 w", quantized(&case.x, &x, 4.0 / 255.0, 3), f16t(&case.w, &w)),
            ("f16 x, f32 w", f16t(&case.x, &x), f32t(&case.w, &w)),
        ];
        for (what, xt, wt) in &inputs {
            let got = run(&Op::Conv(case.conv), &[xt, wt, &b], desc(DType::F32, &case.out))
                .unwrap_or_else(|e| panic!("case {k}, {what}: {e:?}"));
            let want = direct(case, &xt.values(), &wt.values(), &bias);
            let got = got.values();
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "case {k}, {what}, output {i}: {a} vs {b}");
            }
        }
    }
}
