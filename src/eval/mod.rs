//! Evaluation (ALGORITHM.md §8): AUROC, average precision and F1-max with scikit-learn's conventions, and
//! the 3D Dice protocol of §8.3 with trilinear upsampling of the token grid ([`Upsample`]: values at the
//! token blocks' centres by default); the 2D pieces: bilinear align-corners upsampling (§7.1), RsCIN
//! ([`rscin`]), AUPRO ([`aupro`]) and the label-free GMM threshold of §9 ([`gmm`]).
//!
//! Input: scores and binary labels (flat slices), or per-case token grids and full-resolution lesion masks.
//! Output: the metrics; the Dice protocol also returns its threshold and per-case values.
//!
//! Conventions (scikit-learn, checked by `tests/eval.rs` against it): AUROC counts ties as ½ (Mann–Whitney);
//! AP is `Σ (R_n − R_{n−1}) P_n` over the distinct thresholds, no interpolation; F1-max is the largest
//! `2PR/(P+R)` over the distinct thresholds (predict positive iff `score ≥ t`), with that threshold.
//! Metrics that are undefined (one class only) are `None`, never a number that looks like a result.
//! Traps: scores are compared as f64; NaN scores are refused by the callers (maps never hold NaN).

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

pub mod aupro;
pub mod gmm;
pub mod pixel;
pub mod rscin;

/// Scores sorted descending with labels, grouped by distinct score: `(score, positives, negatives)`.
fn groups(scores: &[f32], labels: &[bool]) -> Vec<(f64, u64, u64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out: Vec<(f64, u64, u64)> = Vec::new();
    for i in idx {
        let s = scores[i] as f64;
        let (p, n) = if labels[i] { (1, 0) } else { (0, 1) };
        match out.last_mut() {
            Some(last) if last.0 == s => {
                last.1 += p;
                last.2 += n;
            }
            _ => out.push((s, p, n)),
        }
    }
    out
}

/// The smallest and largest score of a batch of token-score vectors (`(+inf, -inf)` when empty): the range
/// of the voxel/pixel histograms and of the overlay colours.
pub fn score_range(token_scores: &[Vec<f32>]) -> (f32, f32) {
    token_scores
        .iter()
        .flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        })
}

/// Area under the ROC curve (ties count ½). `None` unless both classes are present.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    auroc_from_groups(&groups(scores, labels))
}

/// AUROC from descending `(score, positives, negatives)` groups (also used by the histogram version).
pub fn auroc_from_groups(groups: &[(f64, u64, u64)]) -> Option<f64> {
    let pos: u64 = groups.iter().map(|g| g.1).sum();
    let neg: u64 = groups.iter().map(|g| g.2).sum();
    if pos == 0 || neg == 0 {
        return None;
    }
    // Walking down the scores: every positive outranks the negatives not yet seen.
    let mut neg_seen = 0u64;
    let mut area = 0.0f64;
    for &(_, p, n) in groups {
        area += p as f64 * (neg - neg_seen - n) as f64 + 0.5 * p as f64 * n as f64;
        neg_seen += n;
    }
    Some(area / (pos as f64 * neg as f64))
}

/// Average precision (scikit-learn's step-wise definition). `None` without positives.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let g = groups(scores, labels);
    let pos: u64 = g.iter().map(|x| x.1).sum();
    if pos == 0 {
        return None;
    }
    let (mut tp, mut fp, mut ap, mut last_recall) = (0u64, 0u64, 0.0, 0.0);
    for &(_, p, n) in &g {
        tp += p;
        fp += n;
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    Some(ap)
}

/// F1-max and its threshold (positive iff `score ≥ threshold`). `None` without positives.
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Option<(f64, f64)> {
    f1_max_from_groups(&groups(scores, labels))
}

/// F1-max from descending `(score, positives, negatives)` groups.
pub fn f1_max_from_groups(groups: &[(f64, u64, u64)]) -> Option<(f64, f64)> {
    let pos: u64 = groups.iter().map(|x| x.1).sum();
    if pos == 0 {
        return None;
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut best: Option<(f64, f64)> = None;
    for &(s, p, n) in groups {
        tp += p;
        fp += n;
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (pos - tp)) as f64;
        if best.is_none_or(|(b, _)| f1 > b) {
            best = Some((f1, s));
        }
    }
    best
}

/// Dice of a prediction against a mask, with the empty convention of §8.3: 1 when both are empty.
pub fn dice(pred: impl Iterator<Item = bool>, truth: impl Iterator<Item = bool>) -> f64 {
    let (mut inter, mut p, mut t) = (0u64, 0u64, 0u64);
    for (a, b) in pred.zip(truth) {
        inter += (a && b) as u64;
        p += a as u64;
        t += b as u64;
    }
    if p + t == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (p + t) as f64
    }
}

/// Euclidean distance, in voxels, from `point` `(z, y, x)` to the nearest `true` voxel of `mask`; 0 when the
/// point is inside, `None` for an empty mask. Brute force over the mask's voxels (a lesion is a few
/// thousand voxels of a cube; called once per lesion case).
pub fn distance_to_mask(mask: ArrayView3<bool>, point: (usize, usize, usize)) -> Option<f64> {
    if mask[[point.0, point.1, point.2]] {
        return Some(0.0);
    }
    let d2 = |(z, y, x): (usize, usize, usize)| {
        let dz = z as f64 - point.0 as f64;
        let dy = y as f64 - point.1 as f64;
        let dx = x as f64 - point.2 as f64;
        dz * dz + dy * dy + dx * dx
    };
    mask.indexed_iter()
        .filter(|(_, &v)| v)
        .map(|(i, _)| d2(i))
        .min_by(f64::total_cmp)
        .map(f64::sqrt)
}

/// Token ground truth: a token is positive if any voxel of its `patch³` cube is (max-pool, §8.3 step 1).
pub fn pool_labels(mask: ArrayView3<bool>, patch: usize) -> Array3<bool> {
    let (z, y, x) = mask.dim();
    let mut out = Array3::from_elem((z / patch, y / patch, x / patch), false);
    for ((k, j, i), &v) in mask.indexed_iter() {
        if v {
            if let Some(o) = out.get_mut((k / patch, j / patch, i / patch)) {
                *o = true;
            }
        }
    }
    out
}

/// Where a token's value is placed when a token grid is upsampled to the voxel grid (ALGORITHM.md §7.2,
/// open question Q8).
///
/// * `Centres` (mri-ad's default on volumes): token `i` of a grid of `g` over `s` voxels covers voxels
///   `[i·s/g, (i+1)·s/g)` (§3.2 step 7), so its value sits at the centre of that block: voxel `o` samples
///   grid coordinate `(o + ½)·g/s − ½`, clamped to `[0, g−1]` (the outer half-blocks repeat the edge
///   token, as PyTorch's `align_corners=False` and scipy's `zoom(grid_mode=True, mode="nearest")`).
/// * `Corners` (the spec's choice, kept for parity with MuSc's 2D maps): voxel `o` samples
///   `o·(g−1)/(s−1)`, so the first and last tokens sit on the first and last voxels. On volumes this
///   shifts token `i` by `i·(s−g)/(g·(g−1)) − (s/g − 1)/2` voxels from its block's centre, −6.5 to +6.5
///   voxels at 224³ with 14-voxel tokens: the maps are stretched outwards from the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    #[default]
    Centres,
    Corners,
}

impl Upsample {
    /// Every mode, in the order of [`Upsample::NAMES`].
    pub const ALL: [Upsample; 2] = [Upsample::Centres, Upsample::Corners];
    /// The value names, as on the command line, in config files and in summary.json.
    pub const NAMES: [&'static str; 2] = [Upsample::Centres.name(), Upsample::Corners.name()];

    /// The value name.
    pub const fn name(self) -> &'static str {
        match self {
            Upsample::Centres => "centres",
            Upsample::Corners => "corners",
        }
    }

    /// The rule in words (for `summary.json`).
    pub fn rule(self) -> &'static str {
        match self {
            Upsample::Centres => "trilinear, each token's score at the centre of the block of voxels it describes (voxel o samples grid coordinate (o + 1/2)·G/S − 1/2, clamped to [0, G − 1])",
            Upsample::Corners => "trilinear, align-corners (voxel o samples grid coordinate o·(G − 1)/(S − 1); ALGORITHM.md §7.2)",
        }
    }

    /// The grid coordinate sampled by output index `o` of `s` on a grid of `g` cells.
    fn coordinate(self, o: usize, g: usize, s: usize) -> f64 {
        match self {
            Upsample::Centres => {
                ((o as f64 + 0.5) * g as f64 / s as f64 - 0.5).clamp(0.0, (g - 1) as f64)
            }
            Upsample::Corners => o as f64 * (g - 1) as f64 / (s - 1) as f64,
        }
    }
}

crate::settings::choice_setting!(Upsample, ["centres", "corners"]);

crate::settings::declare_settings! {
    /// How `score` on volumes turns token scores into maps (not used by `extract`).
    pub struct MapSettings {
        /// Where each token's score is placed when the token grid is upsampled trilinearly to the voxels:
        /// centres = at the centre of the 14³ block the token describes; corners = align-corners,
        /// ALGORITHM.md §7.2 as written, which puts the outer tokens on the cube's faces (up to 6.5
        /// voxels off at 224³). Used for the maps, the masks and every voxel metric.
        upsample: Upsample = Upsample::Centres;
        /// Write each map's raw field outside the brain too. By default every voxel outside the brain
        /// (the --masks mask, or voxel > 0) is 0 in `maps/<case>_anomaly.nii.gz`, so that an overlay shows no
        /// halo around the head; the metrics and the QC montages are the same either way.
        unmasked_maps: bool = false;
    }
}

impl std::str::FromStr for Upsample {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Upsample::ALL
            .into_iter()
            .find(|u| u.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown upsampling {s:?}, expected one of {:?}",
                    Upsample::NAMES
                )
            })
    }
}

impl std::fmt::Display for Upsample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Trilinear upsampling of a token grid to `size` voxels, the token values placed as `mode` says
/// ([`Upsample`]).
pub fn upsample_trilinear(grid: ArrayView3<f32>, size: [usize; 3], mode: Upsample) -> Array3<f32> {
    let g = grid.dim();
    let g = [g.0, g.1, g.2];
    let coord = |o: usize, axis: usize| -> (usize, usize, f32) {
        if g[axis] == 1 || size[axis] == 1 {
            return (0, 0, 0.0);
        }
        let c = mode.coordinate(o, g[axis], size[axis]);
        // On a grid point the weight is exactly 0, so the token values are reproduced exactly there.
        let lo = (c.floor() as usize).min(g[axis] - 1);
        (lo, (lo + 1).min(g[axis] - 1), (c - lo as f64) as f32)
    };
    let cz: Vec<_> = (0..size[0]).map(|o| coord(o, 0)).collect();
    let cy: Vec<_> = (0..size[1]).map(|o| coord(o, 1)).collect();
    let cx: Vec<_> = (0..size[2]).map(|o| coord(o, 2)).collect();
    Array3::from_shape_fn((size[0], size[1], size[2]), |(k, j, i)| {
        let ((z0, z1, fz), (y0, y1, fy), (x0, x1, fx)) = (cz[k], cy[j], cx[i]);
        let lerp = |a: f32, b: f32, f: f32| a + (b - a) * f;
        let plane = |z: usize| {
            lerp(
                lerp(grid[[z, y0, x0]], grid[[z, y0, x1]], fx),
                lerp(grid[[z, y1, x0]], grid[[z, y1, x1]], fx),
                fy,
            )
        };
        lerp(plane(z0), plane(z1), fz)
    })
}

/// Bilinear upsampling with align-corners semantics (ALGORITHM.md §7.1 step 1): output pixel `o` samples
/// input coordinate `o·(g−1)/(s−1)` on each axis, so the four corners reproduce the grid's corners exactly.
/// `grid` is `[gh, gw]`, `size` is `(sh, sw)`. An axis with one grid cell or one output pixel samples
/// coordinate 0 (the formula's `0/0`), i.e. that axis is constant; an empty grid gives an all-zero output.
pub fn upsample_bilinear(grid: ArrayView2<f32>, size: (usize, usize)) -> Array2<f32> {
    let (gh, gw) = grid.dim();
    if gh == 0 || gw == 0 {
        return Array2::zeros(size);
    }
    let coord = |o: usize, g: usize, s: usize| -> (usize, usize, f32) {
        if g == 1 || s == 1 {
            return (0, 0, 0.0);
        }
        let c = o as f64 * (g - 1) as f64 / (s - 1) as f64;
        let lo = (c.floor() as usize).min(g - 1);
        (lo, (lo + 1).min(g - 1), (c - lo as f64) as f32)
    };
    let cy: Vec<_> = (0..size.0).map(|o| coord(o, gh, size.0)).collect();
    let cx: Vec<_> = (0..size.1).map(|o| coord(o, gw, size.1)).collect();
    Array2::from_shape_fn(size, |(j, i)| {
        let ((y0, y1, fy), (x0, x1, fx)) = (cy[j], cx[i]);
        let lerp = |a: f32, b: f32, f: f32| a + (b - a) * f;
        lerp(
            lerp(grid[[y0, x0]], grid[[y0, x1]], fx),
            lerp(grid[[y1, x0]], grid[[y1, x1]], fx),
            fy,
        )
    })
}

/// Scores binned into a fixed histogram per class, for the voxel AUROC over billions of voxels (§8.3 step
/// 2): the AUROC of the binned scores, ties within a bin counting ½, differs from the exact one by at most
/// the fraction of (positive, negative) pairs that share a bin.
#[derive(Debug, Clone)]
pub struct ScoreHistogram {
    lo: f64,
    width: f64,
    pos: Vec<u64>,
    neg: Vec<u64>,
}

impl ScoreHistogram {
    /// `bins` equal bins over `[lo, hi]` (values outside are clamped to the end bins).
    pub fn new(lo: f64, hi: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        let span = if hi > lo { hi - lo } else { 1.0 };
        ScoreHistogram {
            lo,
            width: span / bins as f64,
            pos: vec![0; bins],
            neg: vec![0; bins],
        }
    }

    /// Adds scores with their labels.
    pub fn add(&mut self, scores: impl Iterator<Item = f32>, labels: impl Iterator<Item = bool>) {
        let last = self.pos.len() - 1;
        for (s, l) in scores.zip(labels) {
            let b = (((s as f64 - self.lo) / self.width).floor().max(0.0) as usize).min(last);
            if l {
                self.pos[b] += 1;
            } else {
                self.neg[b] += 1;
            }
        }
    }

    /// Adds the counts of `other`, a histogram with the same bins (counts are integers, so the result does
    /// not depend on the order histograms are merged in).
    pub fn merge(&mut self, other: &ScoreHistogram) {
        assert!(
            self.lo == other.lo && self.width == other.width && self.pos.len() == other.pos.len(),
            "merged histograms must have the same bins"
        );
        for (a, b) in self.pos.iter_mut().zip(&other.pos) {
            *a += b;
        }
        for (a, b) in self.neg.iter_mut().zip(&other.neg) {
            *a += b;
        }
    }

    /// The F1-max of the binned scores and its threshold, the lower edge of the best bin: predicting
    /// "positive" for the voxels in that bin and above gives that F1 (`None` without positives). Exact up to
    /// the bin width: the exact F1-max over the unbinned scores can only be higher, by the F1 that a threshold
    /// inside a bin adds.
    pub fn f1_max(&self) -> Option<(f64, f64)> {
        let groups: Vec<(f64, u64, u64)> = (0..self.pos.len())
            .rev()
            .filter(|&b| self.pos[b] + self.neg[b] > 0)
            .map(|b| (self.lo + b as f64 * self.width, self.pos[b], self.neg[b]))
            .collect();
        f1_max_from_groups(&groups)
    }

    /// The AUROC of the binned scores (`None` unless both classes were added).
    pub fn auroc(&self) -> Option<f64> {
        let groups: Vec<(f64, u64, u64)> = (0..self.pos.len())
            .rev()
            .filter(|&b| self.pos[b] + self.neg[b] > 0)
            .map(|b| (b as f64, self.pos[b], self.neg[b]))
            .collect();
        auroc_from_groups(&groups)
    }
}

/// Dice of every case at one threshold, with the means (§8.3 step 3e: mean over all cases, healthy
/// included, and over the cases with a lesion).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThresholdDice {
    /// The F1-max that chose the threshold (None when nothing is positive).
    pub f1_max: Option<f64>,
    /// The threshold (prediction: `score ≥ threshold`; None: nothing is predicted).
    pub threshold: Option<f64>,
    /// Dice of every case, in input order.
    pub per_case: Vec<f64>,
    /// Mean over all cases (healthy included).
    pub mean: f64,
    /// Mean over the cases with a lesion (None without any).
    pub mean_lesion: Option<f64>,
}

impl ThresholdDice {
    /// The means of `per_case`; `has_lesion` marks the cases with a lesion, in the same order.
    pub fn new(best: Option<(f64, f64)>, per_case: Vec<f64>, has_lesion: &[bool]) -> Self {
        let lesion: Vec<f64> = per_case
            .iter()
            .zip(has_lesion)
            .filter(|(_, &l)| l)
            .map(|(&d, _)| d)
            .collect();
        ThresholdDice {
            f1_max: best.map(|b| b.0),
            threshold: best.map(|b| b.1),
            mean: per_case.iter().sum::<f64>() / per_case.len().max(1) as f64,
            mean_lesion: (!lesion.is_empty())
                .then(|| lesion.iter().sum::<f64>() / lesion.len() as f64),
            per_case,
        }
    }
}

/// Result of the §8.3 Dice protocol, with two Dice outside it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiceProtocol {
    /// §8.3: the upsampled maps at the token-grid F1-max threshold `t*` (`f1_max` is the token F1-max).
    pub at_t_star: ThresholdDice,
    /// Not §8.3: the same maps at the **voxel-level** F1-max threshold, the F1-max over every voxel of every
    /// upsampled map against the full-resolution masks, pooled over the batch. A token is positive when any
    /// of its voxels is lesion, so `t*` is set to catch the lesion's partial tokens and typically sits lower
    /// than the voxel threshold; the two Dice differ most on maps that are hot around their lesions.
    /// Reported because voxel-level comparisons (among them one of the calibration figures in
    /// docs/experiments/2026-11-30-demo-cohort.md) use this threshold.
    pub at_voxel_threshold: ThresholdDice,
    /// Not §8.3: the token-level Dice of every case, its tokens `≥ t*` against its token labels on the token
    /// grid (1 when both are empty). Pooled over the batch this Dice is the token F1-max itself.
    pub token_per_case: Vec<f64>,
}

/// Token-level Dice of one case: tokens `≥ t` (none when `t` is `None`) against the token labels.
pub fn token_dice(scores: &[f32], labels: &[bool], t: Option<f64>) -> f64 {
    dice(
        scores.iter().map(|&v| t.is_some_and(|t| v as f64 >= t)),
        labels.iter().copied(),
    )
}

/// The Dice protocol of §8.3 on cubes: token grids `[G, G, G]` and lesion masks `[S, S, S]`, `S = patch·G`.
/// `t*` is the F1-max threshold over all tokens of all cases; the trilinear upsampled maps (`upsample`)
/// are binarised at `≥ t*` and compared with the full-resolution masks. Also the same Dice at the exact
/// voxel-level F1-max threshold (the pipeline takes that threshold from its voxel histogram instead, since
/// sorting billions of voxels is out of reach) and the token-level Dice at `t*`.
pub fn dice_protocol(
    token_maps: &[Array3<f32>],
    masks: &[Array3<bool>],
    patch: usize,
    upsample: Upsample,
) -> DiceProtocol {
    let token_scores: Vec<Vec<f32>> = token_maps
        .iter()
        .map(|m| m.iter().copied().collect())
        .collect();
    let token_labels: Vec<Vec<bool>> = masks
        .iter()
        .map(|m| pool_labels(m.view(), patch).iter().copied().collect())
        .collect();
    let best = f1_max(&token_scores.concat(), &token_labels.concat());
    let threshold = best.map(|b| b.1);
    let has_lesion: Vec<bool> = masks.iter().map(|m| m.iter().any(|&v| v)).collect();
    let maps: Vec<Array3<f32>> = token_maps
        .iter()
        .zip(masks)
        .map(|(map, mask)| {
            let d = mask.dim();
            upsample_trilinear(map.view(), [d.0, d.1, d.2], upsample)
        })
        .collect();
    let dice_at = |t: Option<f64>| -> Vec<f64> {
        maps.iter()
            .zip(masks)
            .map(|(up, mask)| {
                dice(
                    up.iter().map(|&v| t.is_some_and(|t| v as f64 >= t)),
                    mask.iter().copied(),
                )
            })
            .collect()
    };
    let voxel_scores: Vec<f32> = maps.iter().flatten().copied().collect();
    let voxel_labels: Vec<bool> = masks.iter().flatten().copied().collect();
    let voxel_best = f1_max(&voxel_scores, &voxel_labels);
    DiceProtocol {
        at_t_star: ThresholdDice::new(best, dice_at(threshold), &has_lesion),
        at_voxel_threshold: ThresholdDice::new(
            voxel_best,
            dice_at(voxel_best.map(|b| b.1)),
            &has_lesion,
        ),
        token_per_case: token_scores
            .iter()
            .zip(&token_labels)
            .map(|(s, l)| token_dice(s, l, threshold))
            .collect(),
    }
}

/// Test data shared by the metric tests of this module and its submodules.
#[cfg(test)]
pub(crate) mod testdata {
    use rand::{Rng, SeedableRng};

    /// `n` random labels (positive with probability `rate`) and scores uniform on `[0, spread)`, shifted
    /// up by `shift` for positives; seeded.
    pub fn labelled_scores(
        seed: u64,
        n: usize,
        rate: f32,
        spread: f32,
        shift: f32,
    ) -> (Vec<f32>, Vec<bool>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..n).map(|_| rng.random::<f32>() < rate).collect();
        let scores = labels
            .iter()
            .map(|&l| rng.random::<f32>() * spread + if l { shift } else { 0.0 })
            .collect();
        (scores, labels)
    }
}

#[cfg(test)]
mod tests;
