//! The PNG plots of a run folder (`plots/`, DESIGN.md): ROC curve, score histograms per group, the
//! similarity-scaling curve, the volume graph with its communities ([`graph`]) and a QC montage per case
//! ([`qc`]).
//!
//! Input: plain data (scores, labels, curves, graph edges, cubes), never file paths to read. Output: one
//! PNG per function, 8-bit RGB, written atomically (rendered into an in-memory RGB buffer with plotters'
//! `BitMapBackend::with_buffer`, encoded with the `png` crate, then temp name + rename).
//!
//! Text: plotters is built without system-font support (`ab_glyph` feature only), so every glyph comes
//! from the DejaVu Sans TTF embedded in the binary (`assets/fonts/DejaVuSans.ttf`, taken from Debian's
//! `fonts-dejavu-core` 2.37-6; licence in `assets/fonts/DejaVuSans-LICENSE.txt`), registered once under
//! plotters' `sans-serif` family. Plots therefore render the same on a bare machine.
//!
//! Traps:
//! * Odd data never panics: empty or constant scores, one group, no labels, a graph without edges all give
//!   a plot (with a note where a curve is undefined).
//! * The output is deterministic (same data, same bytes): layouts are computed, nothing is random, and the
//!   PNG encoder settings are fixed.
//! * The ab_glyph text path has no shaping: combining characters are avoided in labels.

pub mod graph;
pub mod qc;

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::formats::atomic;
use crate::score::scaling::ScalingCurve;
use crate::{Error, Result};

pub use graph::{volume_graph, GraphPlot};
pub use qc::{qc_montage, QcImage};

/// The font family every plot uses (plotters' default family name, so axis labels use it too).
pub const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font once (plotters keeps a global font table).
pub fn ensure_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::internal(
            "the embedded DejaVu Sans font could not be parsed",
        ))
    }
}

/// A plotters error as the library's error.
fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(
        path,
        std::io::Error::other(format!("while drawing the plot: {e}")),
    )
}

/// An RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb {
    /// A white image.
    pub fn white(width: u32, height: u32) -> Self {
        Rgb {
            width,
            height,
            data: vec![255; width as usize * height as usize * 3],
        }
    }
}

/// Encodes an RGB image as PNG (fixed settings, so equal images give equal bytes).
pub fn encode_png(img: &Rgb) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width, img.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&img.data).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Writes an RGB image as a PNG file atomically.
pub fn write_png(path: &Path, img: &Rgb) -> Result<()> {
    let bytes = encode_png(img).map_err(|e| draw_err(path, e))?;
    atomic::write_bytes(path, &bytes)
}

/// Renders with plotters on a white canvas and writes the PNG.
fn render<F>(path: &Path, width: u32, height: u32, draw: F) -> Result<()>
where
    F: FnOnce(&DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String>,
{
    ensure_font()?;
    let mut img = Rgb::white(width, height);
    {
        let root = BitMapBackend::with_buffer(&mut img.data, (width, height)).into_drawing_area();
        draw(&root).map_err(|e| draw_err(path, e))?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    write_png(path, &img)
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

/// A qualitative palette (deterministic colour per index).
pub fn palette(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// The points of a ROC curve `(FPR, TPR)` from (0,0) to (1,1), ties taken together. Empty when a class is
/// missing.
pub fn roc_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let v = scores[order[i]];
        while i < order.len() && scores[order[i]].total_cmp(&v).is_eq() {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        pts.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
    }
    pts
}

/// `plots/roc.png`: patient-level ROC curve (score = the case's maximum token score), AUROC in the title.
pub fn roc_curve(path: &Path, scores: &[f32], labels: &[bool]) -> Result<()> {
    let pts = roc_points(scores, labels);
    let auroc = crate::eval::auroc(scores, labels);
    let pos = labels.iter().filter(|&&l| l).count();
    let title = match auroc {
        Some(a) => format!(
            "Patient-level ROC: AUROC {a:.3} ({pos} lesion, {} other cases)",
            labels.len() - pos
        ),
        None => format!(
            "Patient-level ROC undefined: {pos} lesion and {} other cases",
            labels.len() - pos
        ),
    };
    render(path, 640, 600, |root| {
        root.fill(&WHITE).map_err(s)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&title, font(20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(s)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                6,
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(s)?;
        if !pts.is_empty() {
            chart
                .draw_series(LineSeries::new(pts.clone(), palette(0).stroke_width(3)))
                .map_err(s)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, palette(0).filled())))
                .map_err(s)?;
        }
        Ok(())
    })
}

/// Histogram bins shared by several groups: `(lo, hi, bins)`; a constant or empty input gets a unit-wide
/// range around its value.
fn shared_bins(groups: &[(String, Vec<f32>)], bins: usize) -> (f64, f64, usize) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in groups
        .iter()
        .flat_map(|g| g.1.iter())
        .filter(|v| v.is_finite())
    {
        lo = lo.min(*v as f64);
        hi = hi.max(*v as f64);
    }
    if !lo.is_finite() {
        return (0.0, 1.0, bins);
    }
    if hi - lo < 1e-9 * lo.abs().max(1.0) {
        let half = 0.5 * lo.abs().max(1e-3);
        return (lo - half, hi + half, bins);
    }
    (lo, hi, bins)
}

/// Counts per bin (the last bin includes `hi`).
fn counts(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<u64> {
    let mut c = vec![0u64; bins];
    let w = (hi - lo) / bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = (((v as f64 - lo) / w).floor().max(0.0) as usize).min(bins - 1);
        c[b] += 1;
    }
    c
}

/// One histogram panel: step outlines plus translucent bars per group, normalised to fractions when
/// `density`.
fn histogram_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    xdesc: &str,
    groups: &[(String, Vec<f32>)],
    bins: usize,
    density: bool,
) -> std::result::Result<(), String> {
    let (lo, hi, bins) = shared_bins(groups, bins);
    let w = (hi - lo) / bins as f64;
    let hist: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, v)| {
            let c = counts(v, lo, hi, bins);
            let total = v.iter().filter(|x| x.is_finite()).count().max(1) as f64;
            c.iter()
                .map(|&n| if density { n as f64 / total } else { n as f64 })
                .collect()
        })
        .collect();
    let top = hist
        .iter()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(if density { 0.05 } else { 1.0 })
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0f64..top)
        .map_err(s)?;
    chart
        .configure_mesh()
        .x_desc(xdesc)
        .y_desc(if density {
            "fraction of tokens"
        } else {
            "cases"
        })
        .label_style(font(13))
        .axis_desc_style(font(15))
        // Case counts are whole numbers: no "12.0", and no tick between two counts.
        .y_label_formatter(&|v| {
            if density {
                format!("{v:.2}")
            } else if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(s)?;
    for (gi, ((name, values), h)) in groups.iter().zip(&hist).enumerate() {
        let colour = palette(gi);
        chart
            .draw_series(
                h.iter()
                    .enumerate()
                    .filter(|(_, &y)| y > 0.0)
                    .map(|(b, &y)| {
                        let x0 = lo + b as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w, y)], colour.mix(0.25).filled())
                    }),
            )
            .map_err(s)?;
        let mut step = vec![(lo, 0.0)];
        for (b, &y) in h.iter().enumerate() {
            step.push((lo + b as f64 * w, y));
            step.push((lo + (b + 1) as f64 * w, y));
        }
        step.push((hi, 0.0));
        chart
            .draw_series(LineSeries::new(step, colour.stroke_width(2)))
            .map_err(s)?
            .label(format!("{name} (n = {})", values.len()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    if groups.is_empty() {
        let (w, h) = chart.plotting_area().dim_in_pixel();
        chart
            .plotting_area()
            .strip_coord_spec()
            .draw(&Text::new(
                "no values",
                (w as i32 / 2 - 30, h as i32 / 2),
                font(16),
            ))
            .map_err(s)?;
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(font(13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(s)?;
    Ok(())
}

/// `plots/histogram.png`: left, the patient scores per group; right, the token scores per group (as
/// fractions of each group's tokens, since groups differ in size). Empty groups are dropped.
pub fn score_histograms(
    path: &Path,
    patients: &[(String, Vec<f32>)],
    tokens: &[(String, Vec<f32>)],
) -> Result<()> {
    let keep = |g: &[(String, Vec<f32>)]| -> Vec<(String, Vec<f32>)> {
        g.iter().filter(|(_, v)| !v.is_empty()).cloned().collect()
    };
    let (patients, tokens) = (keep(patients), keep(tokens));
    let n_cases: usize = patients.iter().map(|g| g.1.len()).sum();
    let patient_bins = (n_cases as f64).sqrt().ceil().clamp(5.0, 30.0) as usize;
    render(path, 1200, 520, |root| {
        root.fill(&WHITE).map_err(s)?;
        let (left, right) = root.split_horizontally(600);
        histogram_panel(
            &left,
            "Patient scores per group",
            "patient score (max token score)",
            &patients,
            patient_bins,
            false,
        )?;
        histogram_panel(
            &right,
            "Token scores per group (non-void)",
            "token score",
            &tokens,
            60,
            true,
        )?;
        Ok(())
    })
}

/// The ticks of a log axis over `[lo, hi]`: labelled lines at 1, 2 and 5 times a power of ten, light
/// lines at the other integer multiples. Each value appears once (plotters' own log ticks put every
/// power of ten in twice, so its label was drawn twice, slightly offset).
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return (bold, light);
    }
    for exp in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for mantissa in 1..=9u32 {
            // Divide by a positive power rather than multiply by a negative one: 9/1000 is the f64
            // nearest 0.009, 9 × 0.001 is not.
            let v = if exp < 0 {
                f64::from(mantissa) / 10f64.powi(-exp)
            } else {
                f64::from(mantissa) * 10f64.powi(exp)
            };
            if v < lo || v > hi {
                continue;
            }
            match mantissa {
                1 | 2 | 5 => bold.push(v),
                _ => light.push(v),
            }
        }
    }
    (bold, light)
}

/// A log-scaled axis over `[lo, hi]` with the ticks of [`log_ticks`].
fn log_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    let (bold, light) = log_ticks(lo, hi);
    (lo..hi)
        .log_scale()
        .with_key_points(bold)
        .with_light_points(light)
}

/// A tick label with as many decimals as the value needs (0.002, 0.05, 0.3, 20).
fn log_tick_label(v: f64) -> String {
    let decimals = if v >= 1.0 {
        0
    } else {
        (-v.log10()).ceil().max(1.0) as usize
    };
    format!("{v:.decimals$}")
}

/// `plots/scaling.png`: mean similarity growth rate `τ_i` against rank `i` on log–log axes for normal and
/// flagged tokens, with the reference line `1/(α̂ i)` fitted to the first half of the normal curve (slope
/// −1; ALGORITHM.md §10, thesis Fig. 2.3). Ranks with no token or a zero mean are not drawn (log axes).
pub fn similarity_scaling(path: &Path, curve: &ScalingCurve) -> Result<()> {
    let plot = ScalingPlot::new(curve);
    render(path, 900, 640, |root| plot.draw(root))
}

/// The chart of [`similarity_scaling`]: log–log axes.
type ScalingChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<WithKeyPoints<LogCoord<f64>>, WithKeyPoints<LogCoord<f64>>>,
>;

/// What [`similarity_scaling`] draws, computed from the curve.
struct ScalingPlot<'c> {
    curve: &'c ScalingCurve,
    /// `(rank, mean τ)` of the normal and of the flagged tokens, positive means only.
    normal: Vec<(f64, f64)>,
    flagged: Vec<(f64, f64)>,
    /// The reference line `1/(α̂ i)` (empty without a fit).
    reference: Vec<(f64, f64)>,
    /// The x axis ends at this rank (at least 2).
    n_ranks: f64,
    /// The y axis range.
    lo: f64,
    hi: f64,
    /// The line above the chart: the fit, or why there is none.
    note: String,
}

/// The `(rank, mean)` points of the ranks whose mean is positive (ranks are 1-based).
fn positive_means(m: Vec<Option<f64>>) -> Vec<(f64, f64)> {
    m.iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|&v| v > 0.0).map(|v| ((i + 1) as f64, v)))
        .collect()
}

impl<'c> ScalingPlot<'c> {
    fn new(curve: &'c ScalingCurve) -> Self {
        let normal = positive_means(curve.mean_normal());
        let flagged = positive_means(curve.mean_flagged());
        let fit = curve.fit();
        let n_ranks = curve.len().max(2) as f64;
        let reference: Vec<(f64, f64)> = match fit {
            Some(f) => {
                let steps = 50;
                (0..=steps)
                    .map(|k| {
                        let i = n_ranks.powf(k as f64 / steps as f64);
                        (i, 1.0 / (f.alpha * i))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let ys = normal.iter().chain(&flagged).chain(&reference).map(|p| p.1);
        let (mut lo, mut hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), y| {
            (l.min(y), h.max(y))
        });
        if !lo.is_finite() {
            (lo, hi) = (0.01, 1.0);
        }
        let note = match fit {
            Some(f) => format!(
                "normal-token fit on ranks 1-{}: slope {:.2} (R² {:.2}); reference 1/(α i) with α = {:.3}",
                curve.fit_ranks(),
                f.slope,
                f.r2,
                f.alpha
            ),
            None => "no fit: fewer than 2 ranks with a positive mean".to_string(),
        };
        ScalingPlot {
            curve,
            normal,
            flagged,
            reference,
            n_ranks,
            lo: lo / 1.5,
            hi: hi * 1.5,
            note,
        }
    }

    /// The note line, the axes, the reference line, the curves and the legend.
    fn draw(&self, root: &DrawingArea<BitMapBackend, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(s)?;
        let (top, body) = root.split_vertically(28);
        top.draw(&Text::new(self.note.clone(), (70, 6), font(15)))
            .map_err(s)?;
        let mut chart = ChartBuilder::on(&body)
            .caption(
                "Similarity scaling: mean growth rate τ_i = ln(m_(i+1)/m_i) vs rank i",
                font(19),
            )
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(70)
            .build_cartesian_2d(log_axis(1.0, self.n_ranks), log_axis(self.lo, self.hi))
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("rank i (nearest other case = 1)")
            .y_desc("mean τ_i")
            .label_style(font(13))
            .axis_desc_style(font(15))
            .y_label_formatter(&|v| log_tick_label(*v))
            .x_label_formatter(&|v| log_tick_label(*v))
            .draw()
            .map_err(s)?;
        self.draw_reference(&mut chart)?;
        if self.normal.is_empty() && self.flagged.is_empty() {
            let (_, h) = chart.plotting_area().dim_in_pixel();
            chart
                .plotting_area()
                .strip_coord_spec()
                .draw(&Text::new(
                    "no rank has a defined growth rate (all distances zero or too few cases)",
                    (20, h as i32 / 2),
                    font(16),
                ))
                .map_err(s)?;
            return Ok(());
        }
        self.draw_curves(&mut chart)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(font(14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(s)?;
        Ok(())
    }

    /// The dashed reference line `1/(α̂ i)`, when there is a fit.
    fn draw_reference(&self, chart: &mut ScalingChart) -> std::result::Result<(), String> {
        if self.reference.is_empty() {
            return Ok(());
        }
        chart
            .draw_series(DashedLineSeries::new(
                self.reference.clone(),
                8,
                6,
                RGBColor(90, 90, 90).stroke_width(2),
            ))
            .map_err(s)?
            .label("reference 1/(α i)")
            .legend(|(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], RGBColor(90, 90, 90).stroke_width(2))
            });
        Ok(())
    }

    /// The normal and the flagged curves (line and dots), each with its legend entry, when not empty.
    fn draw_curves(&self, chart: &mut ScalingChart) -> std::result::Result<(), String> {
        let total_n: u64 = self.curve.count_normal.first().copied().unwrap_or(0);
        let total_f: u64 = self.curve.count_flagged.first().copied().unwrap_or(0);
        for (label, points, colour) in [
            (
                format!("normal tokens (n = {total_n})"),
                &self.normal,
                palette(0),
            ),
            (
                format!("flagged: {} (n = {total_f})", self.curve.flagged_rule),
                &self.flagged,
                palette(3),
            ),
        ] {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(s)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Decodes a PNG file into (width, height, RGB bytes).
    pub fn decode(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }
}

#[cfg(test)]
mod tests;
