//! Procedural 16×16 grayscale glyphs for the image families, sample-quality metrics in pixel
//! space and a PNG grid writer.
//!
//! Each glyph is one of [`GLYPH_CLASSES`] (ring, plus, cross, square, bar, triangle) at a
//! random position, size, stroke width and angle, rendered from its signed distance `d` (in
//! pixels, at pixel centres) as `clamp(½ − d / soft, 0, 1)`: a stroke with a linear edge ramp
//! `soft` ∈ [0.7, 1.3] px wide (a slight blur). Pixel values lie in `[0, 1]`.
//!
//! ```
//! use mote_converters::zoo::vae::glyphs::{energy_distance, glyphs, PIXELS};
//! let a = glyphs(64, 1);
//! assert_eq!(a.images.len(), 64 * PIXELS);
//! assert!(a.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
//! assert_eq!(energy_distance(&a.images, &a.images, PIXELS), 0.0);
//! ```

use std::io::BufWriter;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::zoo::rng::SplitMix64;
pub use crate::zoo::vae::{PIXELS, SIDE};

/// Names of the glyph classes, by label.
pub const GLYPH_CLASSES: [&str; 6] = ["ring", "plus", "cross", "square", "bar", "triangle"];

/// A set of glyphs: `images` holds `labels.len()` row-major 16×16 images back to back.
#[derive(Clone, Debug, PartialEq)]
pub struct Glyphs {
    /// Pixels, `n · 256` values in `[0, 1]`.
    pub images: Vec<f32>,
    /// Class of each image (index into [`GLYPH_CLASSES`]).
    pub labels: Vec<u8>,
}

impl Glyphs {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` (256 pixels).
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }
}

type P = (f32, f32);

/// Distance from `p` to the segment `a`–`b`.
fn seg(p: P, a: P, b: P) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy).max(1e-9)).clamp(0.0, 1.0);
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

/// Distance from `p` to the closed polygon `pts`.
fn poly(p: P, pts: &[P]) -> f32 {
    (0..pts.len()).map(|i| seg(p, pts[i], pts[(i + 1) % pts.len()])).fold(f32::INFINITY, f32::min)
}

/// Draws one glyph of class `class` into `out` (256 pixels).
fn render(class: usize, r: &mut SplitMix64, out: &mut [f32]) {
    let u = |r: &mut SplitMix64, lo: f32, hi: f32| lo + (hi - lo) * r.unit_f64() as f32;
    let size = u(r, 3.0, 6.0);
    let margin = size + 1.0;
    let c = (u(r, margin, SIDE as f32 - margin), u(r, margin, SIDE as f32 - margin));
    let width = u(r, 1.0, 2.0);
    let soft = u(r, 0.7, 1.3);
    let angle = u(r, 0.0, std::f32::consts::PI);
    let rot = |a: f32, rad: f32| (c.0 + rad * a.cos(), c.1 + rad * a.sin());
    // Every class as a set of segments / a polygon / a circle around c.
    let sdf: Box<dyn Fn(P) -> f32> = match class {
        0 => Box::new(move |p: P| ((p.0 - c.0).hypot(p.1 - c.1) - size).abs()),
        1 | 2 => {
            let a0 = if class == 1 { 0.0 } else { std::f32::consts::FRAC_PI_4 };
            let (a, b) = (rot(a0, size), rot(a0 + std::f32::consts::PI, size));
            let (e, f) = (rot(a0 + std::f32::consts::FRAC_PI_2, size), rot(a0 - std::f32::consts::FRAC_PI_2, size));
            Box::new(move |p: P| seg(p, a, b).min(seg(p, e, f)))
        }
        3 => {
            let a0 = angle * 0.25;
            let d = size * std::f32::consts::SQRT_2 * 0.85;
            let pts: Vec<P> = (0..4)
                .map(|k| rot(a0 + std::f32::consts::FRAC_PI_4 + k as f32 * std::f32::consts::FRAC_PI_2, d))
                .collect();
            Box::new(move |p: P| poly(p, &pts))
        }
        4 => {
            let (a, b) = (rot(angle, size), rot(angle + std::f32::consts::PI, size));
            Box::new(move |p: P| seg(p, a, b))
        }
        _ => {
            let pts: Vec<P> = (0..3).map(|k| rot(angle + k as f32 * std::f32::consts::TAU / 3.0, size)).collect();
            Box::new(move |p: P| poly(p, &pts))
        }
    };
    for y in 0..SIDE {
        for x in 0..SIDE {
            let d = sdf((x as f32 + 0.5, y as f32 + 0.5)) - 0.5 * width;
            out[y * SIDE + x] = (0.5 - d / soft).clamp(0.0, 1.0);
        }
    }
}

/// `n` glyphs drawn from `seed`, classes uniformly at random.
pub fn glyphs(n: usize, seed: u64) -> Glyphs {
    let mut r = SplitMix64::new(seed);
    let mut images = vec![0f32; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for img in images.chunks_mut(PIXELS) {
        let class = r.below(GLYPH_CLASSES.len());
        render(class, &mut r, img);
        labels.push(class as u8);
    }
    Glyphs { images, labels }
}

/// Per-pixel mean of row-major images of `dim` values each.
pub fn mean_image(images: &[f32], dim: usize) -> Vec<f32> {
    let n = images.len() / dim;
    let mut m = vec![0f64; dim];
    for img in images.chunks(dim) {
        for (a, &v) in m.iter_mut().zip(img) {
            *a += v as f64;
        }
    }
    m.iter().map(|&v| (v / n.max(1) as f64) as f32).collect()
}

fn mean_dist(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let (na, nb) = (a.len() / dim, b.len() / dim);
    let mut s = 0f64;
    for x in a.chunks(dim) {
        for y in b.chunks(dim) {
            s += (x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum::<f32>() as f64).sqrt();
        }
    }
    s / (na * nb).max(1) as f64
}

/// Energy distance (Székely's E-statistic, V-statistic form) between two sets of `dim`-vectors
/// stored back to back: `2E|X − Y| − E|X − X'| − E|Y − Y'|` with the Euclidean norm. It is ≥ 0,
/// zero only for equal empirical distributions; two independent draws of the same distribution
/// give a small positive value (compare sets of equal sizes).
pub fn energy_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    2.0 * mean_dist(a, b, dim) - mean_dist(a, a, dim) - mean_dist(b, b, dim)
}

/// Width of [`local_features`].
pub const LOCAL_FEATURES: usize = PIXELS + 2 * SIDE * (SIDE - 1);

/// A fixed second-order feature map of 16×16 images: the pixels, then the products of every
/// horizontally and every vertically adjacent pair (`x[y][x]·x[y][x+1]`, `x[y][x]·x[y+1][x]`),
/// [`LOCAL_FEATURES`] values per image. Squared distances between raw pixels depend only on
/// per-pixel marginals in expectation, so the pixel-space energy distance barely sees whether
/// ink forms strokes; the neighbour products do.
pub fn local_features(images: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.len() / PIXELS * LOCAL_FEATURES);
    for im in images.chunks(PIXELS) {
        out.extend_from_slice(im);
        for y in 0..SIDE {
            for x in 0..SIDE - 1 {
                out.push(im[y * SIDE + x] * im[y * SIDE + x + 1]);
            }
        }
        for y in 0..SIDE - 1 {
            for x in 0..SIDE {
                out.push(im[y * SIDE + x] * im[(y + 1) * SIDE + x]);
            }
        }
    }
    out
}

/// [`energy_distance`] between two image sets in the [`local_features`] space.
pub fn energy_distance_local(a: &[f32], b: &[f32]) -> f64 {
    energy_distance(&local_features(a), &local_features(b), LOCAL_FEATURES)
}

/// `n` images whose pixels are drawn independently, each from that pixel's values over
/// `train` (the best model that ignores correlations between pixels).
pub fn independent_pixels(train: &[f32], n: usize, seed: u64) -> Vec<f32> {
    let rows = train.len() / PIXELS;
    let mut r = SplitMix64::new(seed);
    let mut out = vec![0f32; n * PIXELS];
    for img in out.chunks_mut(PIXELS) {
        for (p, v) in img.iter_mut().enumerate() {
            *v = train[r.below(rows) * PIXELS + p];
        }
    }
    out
}

/// `n` images of independent uniform [0, 1] noise.
pub fn uniform_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n * PIXELS).map(|_| r.unit_f64() as f32).collect()
}

/// Writes panels of 16×16 images as one grayscale PNG: each panel a `cols`-wide grid of its
/// images (white = 1), pixels scaled `zoom`×, 1-pixel grey lines between images and a 6-pixel
/// gutter between panels (left to right).
pub fn grid_png(path: &Path, panels: &[&[f32]], cols: usize, zoom: usize) -> Result<()> {
    if panels.is_empty() || cols == 0 || zoom == 0 {
        return Err(anyhow!("grid_png: need a panel, cols > 0 and zoom > 0"));
    }
    let rows = panels.iter().map(|p| p.len() / PIXELS).max().unwrap_or(0).div_ceil(cols).max(1);
    let tile = SIDE * zoom + 1;
    let (pw, ph) = (cols * tile + 1, rows * tile + 1);
    let gutter = 6;
    let (w, h) = (panels.len() * (pw + gutter) - gutter, ph);
    let mut img = vec![255u8; w * h];
    for (k, panel) in panels.iter().enumerate() {
        let x0 = k * (pw + gutter);
        for y in 0..ph {
            for x in 0..pw {
                img[y * w + x0 + x] = 128;
            }
        }
        for (i, im) in panel.chunks(PIXELS).enumerate() {
            let (tx, ty) = (x0 + (i % cols) * tile + 1, (i / cols) * tile + 1);
            for y in 0..SIDE * zoom {
                for x in 0..SIDE * zoom {
                    let v = im[(y / zoom) * SIDE + x / zoom];
                    img[(ty + y) * w + tx + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&img)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_seeded_in_range_and_every_class_draws_ink() {
        let a = glyphs(600, 3);
        assert_eq!(a, glyphs(600, 3));
        assert_ne!(a.images, glyphs(600, 4).images);
        for c in 0..GLYPH_CLASSES.len() {
            let n = a.labels.iter().filter(|&&l| l as usize == c).count();
            assert!(n > 60, "class {c}: {n}");
        }
        for i in 0..a.len() {
            let ink: f32 = a.image(i).iter().sum();
            let border: f32 = (0..SIDE).map(|k| a.image(i)[k] + a.image(i)[(SIDE - 1) * SIDE + k]).sum();
            assert!(ink > 4.0 && ink < 120.0, "image {i} ({}): ink {ink}", GLYPH_CLASSES[a.labels[i] as usize]);
            assert!(border < 0.5 * ink, "image {i}: glyph not inside the frame");
        }
    }

    #[test]
    fn energy_distance_ranks_fresh_data_above_baselines() {
        let train = glyphs(2000, 1);
        let (a, b) = (glyphs(200, 2), glyphs(200, 3));
        let floor = energy_distance(&a.images, &b.images, PIXELS);
        let indep = energy_distance(&a.images, &independent_pixels(&train.images, 200, 4), PIXELS);
        let noise = energy_distance(&a.images, &uniform_noise(200, 5), PIXELS);
        assert!(floor > 0.0 && floor < indep && indep < noise, "{floor} {indep} {noise}");
        // Neighbour products see that independent pixels form no strokes.
        let floor2 = energy_distance_local(&a.images, &b.images);
        let indep2 = energy_distance_local(&a.images, &independent_pixels(&train.images, 200, 4));
        assert!(indep2 / floor2 > 1.5 * indep / floor, "{floor2} {indep2} vs {floor} {indep}");
        // Two point masses at distance d: 2d.
        let (x, y) = (vec![0.0; PIXELS], vec![0.5; PIXELS]);
        assert!((energy_distance(&x, &y, PIXELS) - 2.0 * 8.0).abs() < 1e-9);
    }

    #[test]
    fn grid_png_writes_a_decodable_image() {
        let dir = std::env::temp_dir().join(format!("mote-glyphs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.png");
        let g = glyphs(5, 1);
        grid_png(&path, &[&g.images, &g.images[..PIXELS]], 4, 2).unwrap();
        let mut reader = png::Decoder::new(std::fs::File::open(&path).unwrap()).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2 * (4 * 33 + 1) + 6, 2 * 33 + 1));
        std::fs::remove_dir_all(&dir).ok();
    }
}
