//! [`TokenSet`]: the tokens of one case (a volume or an image), the unit every scoring stage works on.
//!
//! Shape contract: `tokens` is `[L, M, D]` (views or layers, positions, feature dimension), `valid` has `M`
//! entries (false = void: outside the brain, or padding), and `grid` is `(gz, gy, gx)` with
//! `gz·gy·gx = M`, positions in raster order (z slowest, x fastest). A 2D image has `gz = 1`.

use ndarray::Array3;

use crate::{Error, Result};

/// The tokens of one case.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// Case identifier (file stem of the input, double extensions removed).
    pub name: String,
    /// Token features, `[L, M, D]`.
    pub tokens: Array3<f32>,
    /// `valid[p]` is false for void positions.
    pub valid: Vec<bool>,
    /// Grid `(gz, gy, gx)`, `gz·gy·gx = M`.
    pub grid: [usize; 3],
}

impl TokenSet {
    /// Builds a token set, checking the shapes agree and every value is finite.
    pub fn new(
        name: impl Into<String>,
        tokens: Array3<f32>,
        valid: Vec<bool>,
        grid: [usize; 3],
    ) -> Result<Self> {
        let name = name.into();
        let (l, m, d) = tokens.dim();
        let problem = if l == 0 || m == 0 || d == 0 {
            Some(format!("tokens have an empty dimension: shape [{l}, {m}, {d}]"))
        } else if valid.len() != m {
            Some(format!(
                "valid has {} entries but tokens have M = {m} positions",
                valid.len()
            ))
        } else if grid.iter().product::<usize>() != m {
            Some(format!(
                "grid {:?} holds {} positions but tokens have M = {m}",
                grid,
                grid.iter().product::<usize>()
            ))
        } else if let Some(idx) = tokens.iter().position(|v| !v.is_finite()) {
            let (li, rem) = (idx / (m * d), idx % (m * d));
            Some(format!(
                "token value is not finite ({}) at layer {li}, position {}, channel {}",
                tokens.as_slice().map(|s| s[idx]).unwrap_or(f32::NAN),
                rem / d,
                rem % d
            ))
        } else if !valid.iter().any(|&v| v) {
            Some("every position is void (valid is all false): nothing to score".to_string())
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::bad_input(name, p)),
            None => Ok(TokenSet {
                name,
                tokens,
                valid,
                grid,
            }),
        }
    }

    /// Number of views (layers), `L`.
    pub fn n_views(&self) -> usize {
        self.tokens.dim().0
    }
    /// Number of positions, `M`.
    pub fn n_positions(&self) -> usize {
        self.tokens.dim().1
    }
    /// Feature dimension, `D`.
    pub fn dim(&self) -> usize {
        self.tokens.dim().2
    }
    /// Number of non-void positions.
    pub fn n_valid(&self) -> usize {
        self.valid.iter().filter(|&&v| v).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_shape_mismatches_and_nan() {
        let t = Array3::<f32>::zeros((1, 8, 2));
        assert!(TokenSet::new("a", t.clone(), vec![true; 7], [2, 2, 2]).is_err());
        assert!(TokenSet::new("a", t.clone(), vec![true; 8], [2, 2, 3]).is_err());
        assert!(TokenSet::new("a", t.clone(), vec![false; 8], [2, 2, 2]).is_err());
        let mut bad = t.clone();
        bad[[0, 3, 1]] = f32::NAN;
        let err = TokenSet::new("a", bad, vec![true; 8], [2, 2, 2]).unwrap_err();
        assert!(err.to_string().contains("position 3, channel 1"), "{err}");
        assert!(TokenSet::new("a", t, vec![true; 8], [2, 2, 2]).is_ok());
    }
}
