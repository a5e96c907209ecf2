//! `plots/graph.png`: CoDeGraph's volume graph (nodes = cases, edges = selected suspicious links with their
//! weights) and its communities, outlier communities highlighted.
//!
//! Input: a [`GraphPlot`] (names, groups, edges `(i, j, w)`, communities as member lists with the outlier
//! flag). Output: a PNG, written atomically.
//!
//! Layout (deterministic, no randomness): the communities, in the given order, sit on one large circle,
//! each taking an arc proportional to its radius; a community's members sit on a small circle around its
//! centre (radius grows with the square root of its size). Cases missing from every community are drawn as
//! singletons after the others. Edge width and opacity grow with the weight; node colour = community
//! (singletons grey); healthy cases are circles, the others squares; outlier communities get a red ring.
//! Names are written next to the nodes for batches up to 80 cases.

use std::f64::consts::PI;
use std::path::Path;

use plotters::prelude::*;

use super::{font, palette, render, s};
use crate::Result;

/// What the graph plot shows.
#[derive(Debug, Clone)]
pub struct GraphPlot {
    pub names: Vec<String>,
    /// Group of each case (`healthy` draws a circle, anything else a square).
    pub groups: Vec<String>,
    /// `(i, j, weight)`, indices into `names`.
    pub edges: Vec<(usize, usize, f64)>,
    /// `(members, outlier)`.
    pub communities: Vec<(Vec<usize>, bool)>,
    /// One line under the title (e.g. γ and link counts).
    pub note: String,
}

const W: u32 = 1000;
const H: u32 = 1000;

/// Node positions, the communities laid out (given ones first, then the cases missing from all), and the
/// circle of each `(centre, radius)`.
type Layout = (Vec<(f64, f64)>, Vec<Vec<usize>>, Vec<((f64, f64), f64)>);

fn layout(plot: &GraphPlot) -> Layout {
    let n = plot.names.len();
    let mut comms: Vec<Vec<usize>> = plot
        .communities
        .iter()
        .map(|(m, _)| m.iter().copied().filter(|&i| i < n).collect::<Vec<_>>())
        .filter(|m: &Vec<usize>| !m.is_empty())
        .collect();
    let mut seen = vec![false; n];
    comms.iter().flatten().for_each(|&i| seen[i] = true);
    comms.extend((0..n).filter(|&i| !seen[i]).map(|i| vec![i]));
    // Radii in units of the node spacing, then scaled so that the arcs fill the big circle.
    let unit: Vec<f64> = comms
        .iter()
        .map(|m| {
            if m.len() == 1 {
                1.0
            } else {
                1.0 + (m.len() as f64).sqrt() * 1.2
            }
        })
        .collect();
    let total: f64 = unit.iter().map(|r| 2.0 * r).sum::<f64>().max(1e-9);
    let big = 0.36 * W.min(H) as f64;
    let centre = (W as f64 / 2.0, H as f64 / 2.0 + 20.0);
    // Circumference 2π·big shared in proportion to the diameters; the scale keeps circles apart.
    let scale = (2.0 * PI * big / total * 0.9).min(big * 0.9);
    let mut pos = vec![(0.0, 0.0); n];
    let mut circles = Vec::with_capacity(comms.len());
    let mut angle = -PI / 2.0;
    let single = comms.len() == 1;
    for (m, &u) in comms.iter().zip(&unit) {
        let span = 2.0 * PI * (2.0 * u) / total;
        let a = angle + span / 2.0;
        angle += span;
        let c = if single {
            centre
        } else {
            (centre.0 + big * a.cos(), centre.1 + big * a.sin())
        };
        let r = if single { big * 0.8 } else { u * scale * 0.5 };
        circles.push((c, r.max(6.0)));
        if m.len() == 1 {
            pos[m[0]] = c;
            continue;
        }
        let inner = r * 0.75;
        for (k, &i) in m.iter().enumerate() {
            let t = -PI / 2.0 + 2.0 * PI * k as f64 / m.len() as f64;
            pos[i] = (c.0 + inner * t.cos(), c.1 + inner * t.sin());
        }
    }
    (pos, comms, circles)
}

/// Draws the volume graph.
pub fn volume_graph(path: &Path, plot: &GraphPlot) -> Result<()> {
    let n = plot.names.len();
    let (pos, comms, circles) = layout(plot);
    let outlier_of: Vec<bool> = {
        let mut o = vec![false; comms.len()];
        for (ci, m) in comms.iter().enumerate() {
            o[ci] = plot
                .communities
                .iter()
                .any(|(members, out)| *out && members.first() == m.first());
        }
        o
    };
    let mut colour = vec![RGBColor(160, 160, 160); n];
    let mut k = 0;
    for m in &comms {
        if m.len() > 1 {
            for &i in m {
                colour[i] = palette(k);
            }
            k += 1;
        }
    }
    let wmax = plot
        .edges
        .iter()
        .map(|e| e.2)
        .filter(|w| w.is_finite())
        .fold(0.0f64, f64::max);
    let p = |i: usize| (pos[i].0.round() as i32, pos[i].1.round() as i32);
    let outliers = outlier_of.iter().filter(|&&o| o).count();
    render(path, W, H, |root| {
        root.fill(&WHITE).map_err(s)?;
        root.draw(&Text::new(
            format!(
                "Volume graph: {n} cases, {} edges, {} communities ({outliers} outlier)",
                plot.edges.len(),
                comms.len()
            ),
            (20, 12),
            font(22),
        ))
        .map_err(s)?;
        root.draw(&Text::new(plot.note.clone(), (20, 42), font(15)))
            .map_err(s)?;
        root.draw(&Text::new(
            "colour = community (grey: alone); circle = healthy, square = other; red ring = outlier community; line width = weight",
            (20, H as i32 - 26),
            font(13),
        ))
        .map_err(s)?;
        for ((c, r), &out) in circles.iter().zip(&outlier_of) {
            if out {
                let centre = (c.0.round() as i32, c.1.round() as i32);
                let rr = (*r + 14.0).round() as i32;
                root.draw(&Circle::new(centre, rr, RGBColor(255, 225, 225).filled()))
                    .map_err(s)?;
                root.draw(&Circle::new(centre, rr, RED.stroke_width(3)))
                    .map_err(s)?;
            }
        }
        for &(i, j, w) in &plot.edges {
            if i >= n || j >= n || !w.is_finite() {
                continue;
            }
            let t = if wmax > 0.0 {
                (w / wmax).clamp(0.0, 1.0)
            } else {
                1.0
            };
            let width = 1 + (t * 5.0).round() as u32;
            root.draw(&PathElement::new(
                [p(i), p(j)],
                RGBColor(40, 40, 90).mix(0.25 + 0.6 * t).stroke_width(width),
            ))
            .map_err(s)?;
        }
        let node = if n > 80 { 5 } else { 8 };
        for i in 0..n {
            let (x, y) = p(i);
            let fill = colour[i].filled();
            if plot.groups.get(i).map(String::as_str) == Some("healthy") {
                root.draw(&Circle::new((x, y), node, fill)).map_err(s)?;
                root.draw(&Circle::new((x, y), node, BLACK.stroke_width(1)))
                    .map_err(s)?;
            } else {
                let r = [(x - node, y - node), (x + node, y + node)];
                root.draw(&Rectangle::new(r, fill)).map_err(s)?;
                root.draw(&Rectangle::new(r, BLACK.stroke_width(1)))
                    .map_err(s)?;
            }
            if n <= 80 {
                root.draw(&Text::new(
                    plot.names[i].clone(),
                    (x + node + 2, y - node - 4),
                    font(12),
                ))
                .map_err(s)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::decode;
    use super::*;

    fn plot() -> GraphPlot {
        GraphPlot {
            names: (0..9).map(|i| format!("c{i}")).collect(),
            groups: (0..9)
                .map(|i| if i < 5 { "healthy" } else { "query" }.to_string())
                .collect(),
            edges: vec![
                (0, 1, 3.0),
                (1, 2, 1.0),
                (5, 6, 9.0),
                (6, 7, 8.0),
                (5, 7, 7.0),
            ],
            communities: vec![
                (vec![0, 1, 2], false),
                (vec![3], false),
                (vec![4], false),
                (vec![5, 6, 7], true),
            ],
            note: "test".into(),
        }
    }

    #[test]
    fn graph_plot_is_deterministic_and_marks_outliers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        volume_graph(&a, &plot()).unwrap();
        volume_graph(&b, &plot()).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap(), "byte for byte");
        let (w, h, px) = decode(&a);
        assert_eq!((w, h), (W, H));
        let red = px
            .chunks(3)
            .filter(|p| (p[0], p[1], p[2]) == (255, 0, 0))
            .count();
        assert!(red > 100, "outlier ring drawn: {red} red pixels");
        // Case 8 is in no community: laid out as a singleton, not at the origin.
        let (pos, comms, _) = layout(&plot());
        assert_eq!(comms.len(), 5);
        assert!(pos.iter().all(|&(x, y)| x > 0.0 && y > 0.0));
        // Without the outlier flag the ring disappears, and the image differs.
        let mut quiet = plot();
        quiet.communities[3].1 = false;
        volume_graph(&b, &quiet).unwrap();
        let (_, _, px) = decode(&b);
        assert_eq!(
            px.chunks(3)
                .filter(|p| (p[0], p[1], p[2]) == (255, 0, 0))
                .count(),
            0
        );
        // Degenerate graphs: no edges, no communities, bad indices.
        let empty = GraphPlot {
            names: vec!["x".into()],
            groups: vec![],
            edges: vec![(0, 5, 1.0)],
            communities: vec![],
            note: String::new(),
        };
        volume_graph(&b, &empty).unwrap();
    }
}
