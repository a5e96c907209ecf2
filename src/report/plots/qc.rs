//! `plots/qc/<case>.png`: a QC montage per case: axial, coronal and sagittal slices of the preprocessed
//! `S³` cube through the hottest voxel of the upsampled anomaly map, the map as a colour overlay above a
//! threshold, and the lesion label's contour when given.
//!
//! Input: a [`QcImage`]: the cube `[z][y][x]` (z inferior→superior, y posterior→anterior, x left→right,
//! as `crate::volume` makes it), the map on the same grid, optionally the lesion mask on the same grid, and
//! the overlay range `[threshold, top]` (the pipeline uses one range for the whole batch, see
//! [`overlay_range`], so cases compare). Output: a PNG, written atomically.
//!
//! Display: axial and coronal in neurological convention (the patient's left on the image's left),
//! superior / anterior up; sagittal with anterior on the left. Slices are magnified by an integer factor
//! (nearest neighbour) to about 300 pixels. Grey scale: 0 to the 99.5th percentile of the cube's positive
//! voxels (every 7th voxel sampled). Overlay: voxels with map ≥ threshold, colour from dark red to yellow
//! and opacity 0.35 to 0.8 as the value goes from the threshold to `top`. Contour: green, one pixel wide
//! on the magnified image. A white cross marks the hottest voxel; its place is printed in the cube's
//! indices and, when the caller gives the [`InputPlace`], in the input's voxel indices (as ITK-SNAP and
//! nibabel count them, from 0) and in world millimetres (RAS+). Each panel has its orientation letters (L/R,
//! A/P, S/I) at its edges.
//!
//! Traps: the hottest voxel is, among the tied maxima, the one nearest to their centroid (see [`hottest`]);
//! a constant map gives its centre. Mismatched shapes are an error, not a panic.

use std::path::Path;

use ndarray::ArrayView3;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{draw_err, ensure_font, font, s, write_png, Rgb};
use crate::formats::nifti::{apply_affine, Affine};
use crate::{Error, Result};

/// What one montage shows.
#[derive(Debug, Clone)]
pub struct QcImage<'a> {
    pub case: &'a str,
    /// Preprocessed cube `[z][y][x]`.
    pub cube: ArrayView3<'a, f32>,
    /// Anomaly map on the cube's grid.
    pub map: ArrayView3<'a, f32>,
    /// Lesion mask on the cube's grid.
    pub label: Option<ArrayView3<'a, bool>>,
    /// Map values from here up are overlaid.
    pub threshold: f32,
    /// Top of the colour scale.
    pub top: f32,
    /// The case's score, shown in the caption.
    pub score: f32,
    /// The voxel `(z, y, x)` the montage is centred on and marks: [`hottest`] of `map` (the caller finds it
    /// once, for its own records too).
    pub hottest: (usize, usize, usize),
    /// Where the cube lies in the input: the hottest point is then also given in the input's voxel
    /// indices and in world millimetres.
    pub place: Option<InputPlace>,
}

/// How a cube voxel maps to the input volume: cube `(x, y, z)` → world RAS+ mm → input voxel `(i, j, k)`.
#[derive(Debug, Clone)]
pub struct InputPlace {
    pub cube_to_world: Affine,
    pub world_to_input: Affine,
    /// The input's storage orientation (`RAS`, `LPS`, …), named next to its indices.
    pub input_axes: String,
}

impl InputPlace {
    /// Cube voxel `(z, y, x)` → (input voxel `(i, j, k)`, rounded to the nearest voxel; world `(x, y, z)` mm).
    pub fn locate(&self, hot: (usize, usize, usize)) -> ([i64; 3], [f64; 3]) {
        let world = apply_affine(
            &self.cube_to_world,
            [hot.2 as f64, hot.1 as f64, hot.0 as f64],
        );
        let v = apply_affine(&self.world_to_input, world);
        (v.map(|c| c.round() as i64), world)
    }
}

/// The batch-wide overlay range: `[98th percentile, maximum]` of the non-void (positive) token scores.
/// With fewer than 2 distinct positive values the threshold is the maximum itself.
pub fn overlay_range(token_scores: &[Vec<f32>]) -> (f32, f32) {
    let mut v: Vec<f32> = token_scores
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return (f32::INFINITY, f32::INFINITY);
    }
    v.sort_unstable_by(f32::total_cmp);
    let top = v[v.len() - 1];
    let idx = ((v.len() - 1) as f64 * 0.98).round() as usize;
    (v[idx], top)
}

/// The hottest voxel `(z, y, x)`: among the voxels holding the maximum (trilinear upsampling makes ties:
/// 2×2×2 around a token centre of an even patch, whole plateaus along the cube's border), the one nearest
/// to their centroid, the first in raster order on equal distance. NaN values are ignored.
pub fn hottest(map: ArrayView3<f32>) -> (usize, usize, usize) {
    let value = map
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let tied: Vec<(usize, usize, usize)> = map
        .indexed_iter()
        .filter(|(_, &v)| v == value)
        .map(|(i, _)| i)
        .collect();
    if tied.is_empty() {
        return (0, 0, 0);
    }
    let n = tied.len() as f64;
    let c = tied.iter().fold([0.0f64; 3], |a, &(z, y, x)| {
        [
            a[0] + z as f64 / n,
            a[1] + y as f64 / n,
            a[2] + x as f64 / n,
        ]
    });
    let d2 = |&(z, y, x): &(usize, usize, usize)| {
        (z as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2) + (x as f64 - c[2]).powi(2)
    };
    let mut best = tied[0];
    for t in &tied[1..] {
        if d2(t) < d2(&best) {
            best = *t;
        }
    }
    best
}

fn hot_colour(t: f32) -> [f32; 3] {
    // dark red → red → yellow
    let t = t.clamp(0.0, 1.0);
    if t < 0.5 {
        [140.0 + 230.0 * t, 0.0, 0.0]
    } else {
        [255.0, 510.0 * (t - 0.5), 0.0]
    }
}

/// The overlay colour of a value at the top of the scale (what the tests look for).
pub const TOP_COLOUR: [u8; 3] = [255, 255, 0];
/// The contour colour.
pub const CONTOUR: [u8; 3] = [0, 230, 0];

/// One 2-D slice: `get(row, col)` into the cube's indices, with its size.
struct Slice {
    rows: usize,
    cols: usize,
    index: Box<dyn Fn(usize, usize) -> [usize; 3]>,
    /// Row and column of the hottest voxel.
    mark: (usize, usize),
    name: String,
    /// The patient's direction at the panel's left, right, top and bottom edge.
    letters: [&'static str; 4],
}

fn slices(shape: (usize, usize, usize), hot: (usize, usize, usize)) -> [Slice; 3] {
    let (nz, ny, nx) = shape;
    let (z, y, x) = hot;
    [
        Slice {
            rows: ny,
            cols: nx,
            index: Box::new(move |r, c| [z, ny - 1 - r, c]),
            mark: (ny - 1 - y, x),
            name: format!("axial z = {z}"),
            letters: ["L", "R", "A", "P"],
        },
        Slice {
            rows: nz,
            cols: nx,
            index: Box::new(move |r, c| [nz - 1 - r, y, c]),
            mark: (nz - 1 - z, x),
            name: format!("coronal y = {y}"),
            letters: ["L", "R", "S", "I"],
        },
        Slice {
            rows: nz,
            cols: ny,
            index: Box::new(move |r, c| [nz - 1 - r, ny - 1 - c, x]),
            mark: (nz - 1 - z, ny - 1 - y),
            name: format!("sagittal x = {x}"),
            letters: ["A", "P", "S", "I"],
        },
    ]
}

fn grey_top(cube: ArrayView3<f32>) -> f32 {
    let mut v: Vec<f32> = cube
        .iter()
        .step_by(7)
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return 1.0;
    }
    let k = ((v.len() - 1) as f64 * 0.995).round() as usize;
    let (_, &mut p, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    if p > 0.0 {
        p
    } else {
        1.0
    }
}

/// Draws the montage.
pub fn qc_montage(path: &Path, q: &QcImage) -> Result<()> {
    check_shapes(path, q)?;
    ensure_font()?;
    let hot = q.hottest;
    let panels = slices(q.cube.dim(), hot);
    let layout = Layout::new(q.cube.dim(), &panels);
    let mut img = Rgb::white(layout.width as u32, layout.height as u32);
    let painter = Painter {
        q,
        layout: &layout,
        grey: grey_top(q.cube),
        span: (q.top - q.threshold).max(f32::EPSILON),
    };
    let mut x0 = layout.gap;
    for (p, &pw) in panels.iter().zip(&layout.panel_w) {
        painter.paint_panel(&mut img, p, pw, x0);
        painter.mark_hottest(&mut img, p, pw, x0);
        x0 += pw + layout.gap;
    }
    // Text and the colour bar with plotters on the same buffer.
    {
        let (w, h) = (layout.width as u32, layout.height as u32);
        let root = BitMapBackend::with_buffer(&mut img.data, (w, h)).into_drawing_area();
        draw_text(&root, q, hot, &panels, &layout).map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, &img)
}

/// Refuses a map or label whose shape differs from the cube's, an empty cube and a marked voxel outside it.
fn check_shapes(path: &Path, q: &QcImage) -> Result<()> {
    let shape = q.cube.dim();
    if q.map.dim() != shape || q.label.as_ref().is_some_and(|l| l.dim() != shape) {
        return Err(Error::bad_input(
            path,
            format!(
                "QC montage of `{}`: cube {:?}, map {:?} and label {:?} differ in shape",
                q.case,
                shape,
                q.map.dim(),
                q.label.as_ref().map(|l| l.dim())
            ),
        ));
    }
    if shape.0 == 0 || shape.1 == 0 || shape.2 == 0 {
        return Err(Error::bad_input(path, "QC montage of an empty cube"));
    }
    let (z, y, x) = q.hottest;
    if z >= shape.0 || y >= shape.1 || x >= shape.2 {
        return Err(Error::bad_input(
            path,
            format!(
                "QC montage of `{}`: the marked voxel {:?} lies outside the cube {shape:?}",
                q.case, q.hottest
            ),
        ));
    }
    Ok(())
}

/// The height of the text band above the panels (three lines).
const TOP_MARGIN: usize = 84;

/// The montage's geometry in pixels: the magnification, the margins and the panels' sizes.
struct Layout {
    mag: usize,
    gap: usize,
    top_margin: usize,
    /// Width of each panel.
    panel_w: Vec<usize>,
    /// Height of the tallest panel.
    panel_h: usize,
    width: usize,
    height: usize,
}

impl Layout {
    /// Slices magnified by an integer factor to about 300 pixels, side by side with gaps, a title band
    /// above and a band for the panel names and the colour bar below.
    fn new(shape: (usize, usize, usize), panels: &[Slice; 3]) -> Layout {
        let largest = shape.0.max(shape.1).max(shape.2);
        let mag = 300usize.div_ceil(largest).max(1);
        let (gap, top_margin, bottom) = (12usize, TOP_MARGIN, 64usize);
        let panel_w: Vec<usize> = panels.iter().map(|p| p.cols * mag).collect();
        let panel_h = panels.iter().map(|p| p.rows * mag).max().unwrap_or(0);
        let width = panel_w.iter().sum::<usize>() + gap * 4;
        let height = top_margin + panel_h + bottom;
        Layout {
            mag,
            gap,
            top_margin,
            panel_w,
            panel_h,
            width,
            height,
        }
    }
}

/// Paints the slices of one montage into its pixel buffer.
struct Painter<'a, 'q> {
    q: &'a QcImage<'q>,
    layout: &'a Layout,
    /// The cube value shown white.
    grey: f32,
    /// Width of the overlay scale (threshold → top), at least `f32::EPSILON`.
    span: f32,
}

impl Painter<'_, '_> {
    fn label_at(&self, i: [usize; 3]) -> bool {
        self.q.label.as_ref().is_some_and(|l| l[i])
    }

    /// The colour of voxel `i`: grey scale, blended with the overlay colour when the map reaches the
    /// threshold (the top colour from the top of the scale up).
    fn voxel_colour(&self, i: [usize; 3]) -> [f32; 3] {
        let q = self.q;
        let g = (q.cube[i] / self.grey).clamp(0.0, 1.0) * 255.0;
        let mut rgb = [g, g, g];
        let v = q.map[i];
        if v.is_finite() && v >= q.threshold {
            let t = (v - q.threshold) / self.span;
            let a = 0.35 + 0.45 * t.clamp(0.0, 1.0);
            let h = hot_colour(t);
            for k in 0..3 {
                rgb[k] = (1.0 - a) * rgb[k] + a * h[k];
            }
            if t >= 1.0 {
                rgb = TOP_COLOUR.map(f32::from);
            }
        }
        rgb
    }

    /// Whether pixel `(r, c)` of a panel `pw` pixels wide, inside the label, is on its contour: a
    /// 4-neighbour on the magnified image falls outside the label (or outside the panel).
    fn on_contour(&self, p: &Slice, pw: usize, r: usize, c: usize) -> bool {
        let mag = self.layout.mag;
        let neighbours = [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)];
        neighbours.iter().any(|&(dr, dc)| {
            let (rr, cc) = (r as i64 + dr, c as i64 + dc);
            if rr < 0 || cc < 0 || rr >= (p.rows * mag) as i64 || cc >= pw as i64 {
                return true;
            }
            let j = (p.index)(rr as usize / mag, cc as usize / mag);
            !self.label_at(j)
        })
    }

    /// Paints slice `p` (`pw` pixels wide) with its left edge at column `x0`.
    fn paint_panel(&self, img: &mut Rgb, p: &Slice, pw: usize, x0: usize) {
        let Layout {
            mag,
            top_margin,
            width,
            ..
        } = *self.layout;
        for r in 0..p.rows * mag {
            for c in 0..pw {
                let (sr, sc) = (r / mag, c / mag);
                let i = (p.index)(sr, sc);
                let mut rgb = self.voxel_colour(i);
                if self.label_at(i) && self.on_contour(p, pw, r, c) {
                    rgb = CONTOUR.map(f32::from);
                }
                let o = ((top_margin + r) * width + x0 + c) * 3;
                for k in 0..3 {
                    img.data[o + k] = rgb[k].round() as u8;
                }
            }
        }
    }

    /// Draws a white cross at the hottest voxel of slice `p`, with a gap so the voxel itself stays
    /// visible.
    fn mark_hottest(&self, img: &mut Rgb, p: &Slice, pw: usize, x0: usize) {
        let Layout {
            mag,
            top_margin,
            width,
            ..
        } = *self.layout;
        let (mr, mc) = (p.mark.0 * mag + mag / 2, p.mark.1 * mag + mag / 2);
        let arm = 4 + 2 * mag;
        let gap_px = mag.max(2);
        let mut put = |r: i64, c: i64| {
            if r >= 0 && c >= 0 && (r as usize) < p.rows * mag && (c as usize) < pw {
                let o = ((top_margin + r as usize) * width + x0 + c as usize) * 3;
                img.data[o..o + 3].copy_from_slice(&[255, 255, 255]);
            }
        };
        for d in gap_px..=arm {
            let d = d as i64;
            let (mr, mc) = (mr as i64, mc as i64);
            put(mr - d, mc);
            put(mr + d, mc);
            put(mr, mc - d);
            put(mr, mc + d);
        }
    }
}

/// The montage's text: the title and overlay lines, the panel names and the colour bar.
fn draw_text(
    root: &DrawingArea<BitMapBackend, Shift>,
    q: &QcImage,
    hot: (usize, usize, usize),
    panels: &[Slice; 3],
    layout: &Layout,
) -> std::result::Result<(), String> {
    let gap = layout.gap;
    let overlay = if q.threshold.is_finite() {
        format!("overlay: map ≥ {:.4} (scale top {:.4})", q.threshold, q.top)
    } else {
        "no overlay (no positive score in the batch)".to_string()
    };
    root.draw(&Text::new(
        format!("{}   score {:.4}", q.case, q.score),
        (gap as i32, 8),
        font(20),
    ))
    .map_err(s)?;
    root.draw(&Text::new(hottest_line(q, hot), (gap as i32, 36), font(14)))
        .map_err(s)?;
    root.draw(&Text::new(
        format!(
            "{overlay}{}",
            if q.label.is_some() {
                "; green: lesion label"
            } else {
                ""
            }
        ),
        (gap as i32, 58),
        font(14),
    ))
    .map_err(s)?;
    draw_letters(root, panels, layout)?;
    let mut x0 = gap;
    for (p, &pw) in panels.iter().zip(&layout.panel_w) {
        root.draw(&Text::new(
            p.name.clone(),
            (x0 as i32, (layout.top_margin + layout.panel_h + 6) as i32),
            font(14),
        ))
        .map_err(s)?;
        x0 += pw + gap;
    }
    draw_colour_bar(root, q, layout)
}

/// Where the hottest voxel is: in the input's voxel indices and world millimetres when known, and in the
/// cube.
fn hottest_line(q: &QcImage, hot: (usize, usize, usize)) -> String {
    let cube = format!("cube (z, y, x) = ({}, {}, {})", hot.0, hot.1, hot.2);
    match &q.place {
        Some(place) => {
            let (v, w) = place.locate(hot);
            let axes = &place.input_axes;
            format!(
                "hottest voxel: input (i, j, k) = ({}, {}, {}) [{axes}], world (x, y, z) = ({:.1}, {:.1}, {:.1}) mm RAS+; {cube}",
                v[0], v[1], v[2], w[0], w[1], w[2]
            )
        }
        None => format!("hottest voxel: {cube}"),
    }
}

/// The orientation letters at the middle of each panel's edges, white on a dark box.
fn draw_letters(
    root: &DrawingArea<BitMapBackend, Shift>,
    panels: &[Slice; 3],
    layout: &Layout,
) -> std::result::Result<(), String> {
    let (top, h) = (layout.top_margin as i32, layout.panel_h as i32);
    let mut x0 = layout.gap as i32;
    for (p, &pw) in panels.iter().zip(&layout.panel_w) {
        let pw = pw as i32;
        let ph = (p.rows * layout.mag) as i32;
        let [l, r, t, b] = p.letters;
        let spots = [
            (l, x0 + 2, top + ph / 2 - 8),
            (r, x0 + pw - 14, top + ph / 2 - 8),
            (t, x0 + pw / 2 - 6, top + 2),
            (b, x0 + pw / 2 - 6, top + ph.min(h) - 18),
        ];
        for (letter, x, y) in spots {
            root.draw(&Rectangle::new(
                [(x - 1, y), (x + 12, y + 17)],
                RGBColor(40, 40, 40).filled(),
            ))
            .map_err(s)?;
            root.draw(&Text::new(letter, (x + 1, y + 1), font(15).color(&WHITE)))
                .map_err(s)?;
        }
        x0 += pw + layout.gap as i32;
    }
    Ok(())
}

/// The colour bar (threshold → top) on its own line under the panel names.
fn draw_colour_bar(
    root: &DrawingArea<BitMapBackend, Shift>,
    q: &QcImage,
    layout: &Layout,
) -> std::result::Result<(), String> {
    let gap = layout.gap;
    let (bx, by, bw, bh) = (
        gap as i32 + 150,
        (layout.top_margin + layout.panel_h + 32) as i32,
        200i32,
        12i32,
    );
    root.draw(&Text::new("overlay scale", (gap as i32, by - 2), font(13)))
        .map_err(s)?;
    for k in 0..bw {
        let t = k as f32 / (bw - 1) as f32;
        let c = if t >= 1.0 {
            TOP_COLOUR.map(f32::from)
        } else {
            hot_colour(t)
        };
        let colour = RGBColor(c[0] as u8, c[1] as u8, c[2] as u8);
        root.draw(&Rectangle::new(
            [(bx + k, by), (bx + k + 1, by + bh)],
            colour.filled(),
        ))
        .map_err(s)?;
    }
    root.draw(&Text::new(
        format!("{:.3}", q.threshold),
        (bx - 48, by - 2),
        font(12),
    ))
    .map_err(s)?;
    root.draw(&Text::new(
        format!("{:.3}", q.top),
        (bx + bw + 4, by - 2),
        font(12),
    ))
    .map_err(s)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::decode;
    use super::*;
    use ndarray::Array3;

    #[test]
    fn overlay_and_contour_sit_at_the_hottest_point() {
        let n = 30;
        let cube = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let d =
                ((z as f32 - 15.0).powi(2) + (y as f32 - 15.0).powi(2) + (x as f32 - 15.0).powi(2))
                    .sqrt();
            if d < 13.0 {
                100.0
            } else {
                0.0
            }
        });
        // One hot blob centred at (z, y, x) = (10, 20, 8).
        let hot = (10usize, 20usize, 8usize);
        let map = Array3::from_shape_fn((n, n, n), |(z, y, x)| {
            let d2 = (z as f32 - hot.0 as f32).powi(2)
                + (y as f32 - hot.1 as f32).powi(2)
                + (x as f32 - hot.2 as f32).powi(2);
            (-d2 / 8.0).exp()
        });
        let label = map.mapv(|v| v > 0.3);
        assert_eq!(hottest(map.view()), hot);
        // Ties: a plateau picks its centre, a constant map the cube's centre, NaN is ignored.
        let mut plateau = Array3::<f32>::zeros((9, 9, 9));
        plateau.slice_mut(ndarray::s![0..3, 2..7, 4..9]).fill(2.0);
        plateau[[8, 8, 8]] = f32::NAN;
        assert_eq!(hottest(plateau.view()), (1, 4, 6));
        assert_eq!(hottest(Array3::<f32>::zeros((5, 5, 5)).view()), (2, 2, 2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.png");
        let q = QcImage {
            case: "case 1",
            cube: cube.view(),
            map: map.view(),
            label: Some(label.view()),
            threshold: 0.2,
            top: 0.9,
            score: 0.9,
            hottest: hot,
            place: None,
        };
        qc_montage(&path, &q).unwrap();
        let (w, h, px) = decode(&path);
        let mag = 10; // 300 / 30
        let (gap, top_margin) = (12, TOP_MARGIN);
        assert_eq!(w as usize, 3 * n * mag + 4 * gap);
        assert_eq!(h as usize, top_margin + n * mag + 64);
        let at = |r: usize, c: usize| {
            let o = (r * w as usize + c) * 3;
            [px[o], px[o + 1], px[o + 2]]
        };
        // Axial panel: the hottest voxel's pixel (row ny-1-y, col x), off the cross, is top colour.
        let (r, c) = (
            top_margin + (n - 1 - hot.1) * mag + 1,
            gap + hot.2 * mag + 1,
        );
        assert_eq!(at(r, c), TOP_COLOUR, "overlay at the hottest point");
        // Far from the blob inside the brain: plain grey (r = g = b), no overlay.
        let (r, c) = (top_margin + (n - 1 - 15) * mag + 5, gap + 22 * mag + 5);
        let p = at(r, c);
        assert!(p[0] == p[1] && p[1] == p[2] && p[0] > 200, "{p:?}");
        // The contour colour appears in every panel's column range.
        let mut x0 = gap;
        for _ in 0..3 {
            let found = (top_margin..top_margin + n * mag)
                .any(|r| (x0..x0 + n * mag).any(|c| at(r, c) == CONTOUR));
            assert!(found, "contour in the panel at x0 = {x0}");
            x0 += n * mag + gap;
        }
        // Without the label no contour; a shape mismatch is an error.
        let q2 = QcImage {
            label: None,
            ..q.clone()
        };
        qc_montage(&path, &q2).unwrap();
        let (_, _, px) = decode(&path);
        assert!(!px.chunks(3).any(|p| p == CONTOUR));
        let small = Array3::<f32>::zeros((4, 4, 4));
        let bad = QcImage {
            map: small.view(),
            ..q.clone()
        };
        assert!(qc_montage(&path, &bad).is_err());
        let outside = QcImage {
            hottest: (n, 0, 0),
            ..q.clone()
        };
        assert!(qc_montage(&path, &outside).is_err());
        // A constant map and an empty batch range do not panic.
        let flat = Array3::<f32>::zeros((n, n, n));
        let q3 = QcImage {
            map: flat.view(),
            hottest: hottest(flat.view()),
            threshold: f32::INFINITY,
            top: f32::INFINITY,
            label: None,
            ..q
        };
        qc_montage(&path, &q3).unwrap();
    }

    #[test]
    fn overlay_range_is_the_98th_percentile_of_positive_scores() {
        let scores = vec![
            (1..=100).map(|v| v as f32).collect::<Vec<_>>(),
            vec![0.0; 50],
        ];
        assert_eq!(overlay_range(&scores), (98.0, 100.0));
        assert_eq!(overlay_range(&[vec![0.0]]).0, f32::INFINITY);
    }
}
