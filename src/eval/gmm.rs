//! Label-free pseudo-mask threshold by a truncated 1-D Gaussian mixture (`ALGORITHM.md` §9).
//!
//! * Input: the anomaly-map values of one image (or of a pooled set; the caller decides), the truncation
//!   quantile `q_tr` (default [`DEFAULT_Q_TR`] = 0.95) and the tail level `α_tail` (default
//!   [`DEFAULT_ALPHA_TAIL`] = 0.01).
//! * Output: a [`GmmThreshold`] with `τ`; the pseudo-mask is `value > τ` ([`pseudo_mask`]).
//!
//! Steps, all in f64:
//! 1. `F` = the values `≤ Quantile_{q_tr}` (numpy's default "linear" quantile: sorted values `v`, position
//!    `h = (n−1)·q`, `v[⌊h⌋] + (h − ⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋])`).
//! 2. EM fits of a 1- and a 2-component mixture to `F`. Initialisation (deterministic): `K = 1`: mean = the
//!    median of `F`; `K = 2`: means = the 25th and 75th percentiles of `F`; equal weights; every variance =
//!    the biased variance of `F`, floored. Each iteration: E-step (responsibilities and the mean
//!    log-likelihood under the current parameters), then M-step (weights `N_k/|F|`, weighted means, weighted
//!    biased variances floored at [`VARIANCE_FLOOR`]; a component with `N_k = 0` keeps its mean and variance
//!    with weight 0). Stop after the M-step of iteration `i ≥ 2` when the mean log-likelihood changed by less
//!    than [`EM_TOL`] from iteration `i − 1`, or after [`EM_MAX_ITER`] iterations. `logL` is the total
//!    log-likelihood of `F` under the final parameters.
//! 3. `BIC_K = −2·logL_K + (3K − 1)·ln|F|`; the smaller wins, a tie goes to `K = 1`.
//! 4. `τ = μ_k* + z·σ_k*`, `k*` the component with the largest mean, `z = Φ⁻¹(1 − α_tail)` ([`normal_isf`]).
//!
//! Traps: a single Gaussian truncated at `q_tr < 1` is skewed, so with thousands of values BIC often prefers
//! `K = 2` (the upper component then models the cut tail, and `τ` comes out a little lower than the
//! untruncated `μ + zσ`); the values are the map's, not a rescaled copy; constant maps give `σ = √1e−6 = 1e−3` (the floor), so
//! `τ` sits just above the constant and the pseudo-mask is empty; the components are reported sorted by mean
//! (EM's own order is an artefact of the initialisation).

use crate::{Error, Result};

/// Default truncation quantile `q_tr` (§9, **L**).
pub const DEFAULT_Q_TR: f64 = 0.95;
/// Default tail level `α_tail` (§9, **L**): `z = Φ⁻¹(0.99) ≈ 2.326`.
pub const DEFAULT_ALPHA_TAIL: f64 = 0.01;
/// EM stops when the mean log-likelihood changes by less than this.
pub const EM_TOL: f64 = 1e-3;
/// EM iteration limit.
pub const EM_MAX_ITER: usize = 100;
/// Lower bound of every component variance.
pub const VARIANCE_FLOOR: f64 = 1e-6;

/// The fitted threshold of §9 and the model it comes from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GmmThreshold {
    /// The threshold `τ = μ_k* + z·σ_k*`; the pseudo-mask is `value > τ`.
    pub tau: f64,
    /// The number of components chosen by BIC (1 or 2).
    pub components: usize,
    /// Means of the chosen model, ascending.
    pub means: Vec<f64>,
    /// Standard deviations, in the order of `means`.
    pub stds: Vec<f64>,
    /// Mixture weights, in the order of `means` (they sum to 1).
    pub weights: Vec<f64>,
    /// `[BIC of K = 1, BIC of K = 2]`.
    pub bic: [f64; 2],
    /// The `q_tr` quantile of the input: the values kept for the fit are those `≤` this.
    pub truncation: f64,
}

/// The upper-tail standard-normal quantile `Φ⁻¹(1 − α)` for `α ∈ (0, 1)` (NaN outside), computed from `α`
/// directly (no `1 − α` rounding): Acklam's rational approximation (relative error ≈ 1e−9), then two Newton
/// steps on `Q(z) = α` with an upper-tail probability `Q` accurate to about 1e−14 (power series below 3, Laplace
/// continued fraction above). `normal_isf(0.01) = 2.3263478740408408`.
pub fn normal_isf(alpha: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) {
        return f64::NAN;
    }
    if alpha > 0.5 {
        return -normal_isf(1.0 - alpha);
    }
    if alpha == 0.5 {
        return 0.0;
    }
    let mut z = -acklam(alpha);
    for _ in 0..2 {
        z += (upper_tail(z) - alpha) / density(z);
    }
    z
}

/// Standard normal density.
fn density(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Upper-tail probability `Q(x) = 1 − Φ(x)` for `x ≥ 0`.
fn upper_tail(x: f64) -> f64 {
    if x < 0.0 {
        return 1.0 - upper_tail(-x);
    }
    if x < 3.0 {
        // Φ(x) − ½ = φ(x)·Σ x^(2n+1)/(1·3·…·(2n+1)).
        let (mut term, mut sum, mut n) = (x, x, 0u32);
        while term > 1e-17 * sum && n < 500 {
            n += 1;
            term *= x * x / (2 * n + 1) as f64;
            sum += term;
        }
        0.5 - density(x) * sum
    } else {
        // Q(x) = φ(x) / (x + 1/(x + 2/(x + 3/(x + …)))), evaluated from the 200th level down.
        let mut f = x;
        for k in (1..=200).rev() {
            f = x + k as f64 / f;
        }
        density(x) / f
    }
}

/// Acklam's approximation of `Φ⁻¹(p)` for `p ∈ (0, 0.5]` (the lower half is all that is needed here).
fn acklam(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// numpy's default ("linear") quantile of ascending `sorted` values, `q ∈ [0, 1]`, `sorted` non-empty.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = (h.floor() as usize).min(sorted.len() - 1);
    if lo + 1 >= sorted.len() {
        return sorted[lo];
    }
    let (a, b, t) = (sorted[lo], sorted[lo + 1], h - lo as f64);
    // The same two-sided interpolation numpy uses (exact at both ends).
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// A 1-D Gaussian mixture.
#[derive(Debug, Clone)]
struct Mixture {
    weights: Vec<f64>,
    means: Vec<f64>,
    vars: Vec<f64>,
}

impl Mixture {
    /// Log of `w_k·N(x; μ_k, σ_k²)` for every component, into `out`.
    fn log_joint(&self, x: f64, out: &mut [f64]) {
        for k in 0..self.means.len() {
            let v = self.vars[k];
            out[k] = self.weights[k].ln()
                - 0.5 * (2.0 * std::f64::consts::PI * v).ln()
                - (x - self.means[k]).powi(2) / (2.0 * v);
        }
    }

    /// Total log-likelihood of `x`; fills the responsibilities `[n·K]` when given.
    fn e_step(&self, x: &[f64], mut resp: Option<&mut [f64]>) -> f64 {
        let k = self.means.len();
        let mut lp = vec![0.0; k];
        let mut total = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            self.log_joint(xi, &mut lp);
            let m = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ll = m + lp.iter().map(|&l| (l - m).exp()).sum::<f64>().ln();
            total += ll;
            if let Some(r) = resp.as_deref_mut() {
                for c in 0..k {
                    r[i * k + c] = (lp[c] - ll).exp();
                }
            }
        }
        total
    }

    fn m_step(&mut self, x: &[f64], resp: &[f64]) {
        let k = self.means.len();
        let n = x.len() as f64;
        for c in 0..k {
            let nk: f64 = (0..x.len()).map(|i| resp[i * k + c]).sum();
            self.weights[c] = nk / n;
            if nk > 0.0 {
                let mu = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| resp[i * k + c] * v)
                    .sum::<f64>()
                    / nk;
                let var = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| resp[i * k + c] * (v - mu).powi(2))
                    .sum::<f64>()
                    / nk;
                self.means[c] = mu;
                self.vars[c] = var.max(VARIANCE_FLOOR);
            }
        }
    }
}

/// EM from `init` (see the module documentation for the stopping rule); returns the model and its total
/// log-likelihood.
fn fit(x: &[f64], init: Mixture) -> (Mixture, f64) {
    let k = init.means.len();
    let mut mix = init;
    let mut resp = vec![0.0; x.len() * k];
    let mut previous: Option<f64> = None;
    for _ in 0..EM_MAX_ITER {
        let mean_ll = mix.e_step(x, Some(&mut resp)) / x.len() as f64;
        mix.m_step(x, &resp);
        if previous.is_some_and(|p| (mean_ll - p).abs() < EM_TOL) {
            break;
        }
        previous = Some(mean_ll);
    }
    let ll = mix.e_step(x, None);
    (mix, ll)
}

/// The §9 threshold of `values` (see the module documentation for every step and convention).
///
/// Errors (`BadArgument`, never a panic): no values, a non-finite value, `q_tr ∉ (0, 1]`,
/// `α_tail ∉ (0, 0.5)`.
pub fn gmm_threshold(values: &[f32], q_tr: f64, alpha_tail: f64) -> Result<GmmThreshold> {
    if values.is_empty() {
        return Err(Error::bad_argument("GMM threshold", "no values to fit"));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::bad_argument(
            "GMM threshold",
            "the values hold a non-finite number",
        ));
    }
    if !(q_tr > 0.0 && q_tr <= 1.0) {
        return Err(Error::bad_argument(
            "truncation quantile q_tr",
            format!("must lie in (0, 1], got {q_tr}"),
        ));
    }
    if !(alpha_tail > 0.0 && alpha_tail < 0.5) {
        return Err(Error::bad_argument(
            "tail level alpha_tail",
            format!("must lie in (0, 0.5), got {alpha_tail}"),
        ));
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let truncation = quantile_sorted(&sorted, q_tr);
    // The sorted values ≤ the quantile are a prefix (the quantile is ≥ the minimum).
    let kept = sorted.partition_point(|&v| v <= truncation);
    let f = &sorted[..kept];
    let n = f.len() as f64;
    let mean = f.iter().sum::<f64>() / n;
    let var = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).max(VARIANCE_FLOOR);

    let one = Mixture {
        weights: vec![1.0],
        means: vec![quantile_sorted(f, 0.5)],
        vars: vec![var],
    };
    let two = Mixture {
        weights: vec![0.5, 0.5],
        means: vec![quantile_sorted(f, 0.25), quantile_sorted(f, 0.75)],
        vars: vec![var, var],
    };
    let (m1, ll1) = fit(f, one);
    let (m2, ll2) = fit(f, two);
    let bic = [-2.0 * ll1 + 2.0 * n.ln(), -2.0 * ll2 + 5.0 * n.ln()];
    let chosen = if bic[1] < bic[0] { m2 } else { m1 };

    let mut order: Vec<usize> = (0..chosen.means.len()).collect();
    order.sort_by(|&a, &b| chosen.means[a].total_cmp(&chosen.means[b]));
    let means: Vec<f64> = order.iter().map(|&k| chosen.means[k]).collect();
    let stds: Vec<f64> = order.iter().map(|&k| chosen.vars[k].sqrt()).collect();
    let weights: Vec<f64> = order.iter().map(|&k| chosen.weights[k]).collect();
    let top = means.len() - 1;
    Ok(GmmThreshold {
        tau: means[top] + normal_isf(alpha_tail) * stds[top],
        components: means.len(),
        means,
        stds,
        weights,
        bic,
        truncation,
    })
}

/// The pseudo-mask of §9 step 6: `value > τ`, in input order.
pub fn pseudo_mask(values: &[f32], tau: f64) -> Vec<bool> {
    values.iter().map(|&v| v as f64 > tau).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn inverse_normal_cdf() {
        assert!((normal_isf(0.01) - 2.3263478740).abs() < 1e-9);
        assert!((normal_isf(0.01) - 2.3263478740408408).abs() < 1e-13);
        assert!((normal_isf(0.025) - 1.959963984540054).abs() < 1e-13);
        assert!((normal_isf(0.3) - 0.5244005127080407).abs() < 1e-13);
        assert!((normal_isf(1e-10) - 6.361340902404056).abs() < 1e-11);
        assert!((normal_isf(0.99) + 2.3263478740408408).abs() < 1e-12);
        assert_eq!(normal_isf(0.5), 0.0);
        assert!(normal_isf(0.0).is_nan() && normal_isf(1.0).is_nan());
        // Round trip through the tail probability over a wide range.
        for &a in &[0.4, 0.1, 0.02425, 0.02, 1e-3, 1e-6, 1e-20, 1e-100] {
            let z = normal_isf(a);
            assert!(
                (upper_tail(z) / a - 1.0).abs() < 1e-12,
                "α = {a}: Q(z) = {}",
                upper_tail(z)
            );
        }
    }

    #[test]
    fn numpy_linear_quantile() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 8.0);
        assert!((quantile_sorted(&v, 0.5) - 3.0).abs() < 1e-15);
        assert!((quantile_sorted(&v, 0.25) - 1.75).abs() < 1e-15);
        assert!((quantile_sorted(&v, 0.95) - 7.4).abs() < 1e-12);
    }

    fn sample(parts: &[(usize, f64, f64)], seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for &(n, mu, sd) in parts {
            let d = Normal::new(mu, sd).unwrap();
            out.extend((0..n).map(|_| d.sample(&mut rng) as f32));
        }
        out
    }

    #[test]
    fn two_separated_gaussians_are_recovered() {
        // 60 % at 1 (sd 0.2), 40 % at 4 (sd 0.3); q_tr = 1 keeps everything.
        let v = sample(&[(6000, 1.0, 0.2), (4000, 4.0, 0.3)], 3);
        let g = gmm_threshold(&v, 1.0, DEFAULT_ALPHA_TAIL).unwrap();
        assert_eq!(g.components, 2, "{g:?}");
        assert!(
            (g.means[0] - 1.0).abs() < 0.05 && (g.means[1] - 4.0).abs() < 0.05,
            "{g:?}"
        );
        assert!(
            (g.stds[1] - 0.3).abs() < 0.05 && (g.weights[0] - 0.6).abs() < 0.05,
            "{g:?}"
        );
        assert!((g.tau - (g.means[1] + 2.3263478740408408 * g.stds[1])).abs() < 1e-12);
        assert!(g.bic[1] < g.bic[0]);
        assert_eq!(
            g.truncation,
            v.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64
        );
    }

    #[test]
    fn one_gaussian_picks_one_component() {
        let v = sample(&[(8000, 2.0, 0.5)], 4);
        let g = gmm_threshold(&v, 1.0, DEFAULT_ALPHA_TAIL).unwrap();
        assert_eq!(g.components, 1, "{g:?}");
        assert!(g.bic[0] <= g.bic[1]);
        assert!(
            (g.means[0] - 2.0).abs() < 0.05 && (g.stds[0] - 0.5).abs() < 0.05,
            "{g:?}"
        );
        assert!(
            (g.tau - (2.0 + 2.3263478740408408 * 0.5)).abs() < 0.1,
            "{g:?}"
        );
        // The pseudo-mask is value > τ: about α_tail of a Gaussian.
        let frac = pseudo_mask(&v, g.tau).iter().filter(|&&m| m).count() as f64 / v.len() as f64;
        assert!(frac > 0.003 && frac < 0.03, "{frac}");
        // With the default truncation the kept values are a Gaussian cut at its 95th percentile, which is
        // skewed; with 7600 values BIC sees that and prefers two components (documented trap). τ stays below
        // the untruncated one but above the bulk.
        let t = gmm_threshold(&v, DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL).unwrap();
        assert_eq!(t.components, 2, "{t:?}");
        assert!(t.tau > t.truncation && t.tau < g.tau, "{t:?}");
    }

    #[test]
    fn constant_input_and_bad_arguments() {
        let g = gmm_threshold(&[0.5; 50], DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL).unwrap();
        assert_eq!(g.components, 1);
        assert!((g.stds[0] - 1e-3).abs() < 1e-15);
        assert!((g.tau - (0.5 + 2.326347874040841e-3)).abs() < 1e-12);
        assert!(pseudo_mask(&[0.5; 50], g.tau).iter().all(|&m| !m));
        assert!(gmm_threshold(&[], 0.95, 0.01).is_err());
        assert!(gmm_threshold(&[1.0, f32::NAN], 0.95, 0.01).is_err());
        assert!(gmm_threshold(&[1.0, f32::INFINITY], 0.95, 0.01).is_err());
        assert!(gmm_threshold(&[1.0], 0.0, 0.01).is_err());
        assert!(gmm_threshold(&[1.0], 1.5, 0.01).is_err());
        assert!(gmm_threshold(&[1.0], 0.95, 0.5).is_err());
        assert!(gmm_threshold(&[1.0], 0.95, 0.0).is_err());
        // A single value fits fine (ln|F| = 0).
        assert_eq!(gmm_threshold(&[2.0], 0.95, 0.01).unwrap().components, 1);
    }
}
