//! Backbone input scaling (ALGORITHM.md §3.2 step 2, §12 Q12): clip the standardised intensities to
//! `[0, 100]`, divide by 100, and set the background (`Ω = 0`) to 0.
//!
//! **Input.** A standardised `S³` cube `[z][y][x]` and its brain mask. **Output.** A cube in `[0, 1]`.
//! The grey → RGB replication and the ImageNet mean/std belong to the backbone (they depend on the model).

use ndarray::{Array3, Zip};

/// Clip to `[0, 100]`, divide by 100, zero outside the mask.
pub fn to_unit_range(standardised: &Array3<f32>, mask: &Array3<bool>) -> Array3<f32> {
    let mut out = Array3::zeros(standardised.raw_dim());
    Zip::from(&mut out)
        .and(standardised)
        .and(mask)
        .for_each(|o, &v, &m| *o = if m { v.clamp(0.0, 100.0) / 100.0 } else { 0.0 });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_scale_background() {
        let v = ndarray::Array3::from_shape_vec((1, 1, 4), vec![-5.0, 50.0, 150.0, 70.0]).unwrap();
        let m = ndarray::Array3::from_shape_vec((1, 1, 4), vec![true, true, true, false]).unwrap();
        let o = super::to_unit_range(&v, &m);
        assert_eq!(o.as_slice().unwrap(), &[0.0, 0.5, 1.0, 0.0]);
    }
}
