//! Voxel-to-world matrices: products, inverses, spacings, orientation codes, and their text.

use super::Affine;

/// The 4×4 identity.
pub fn identity() -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

/// Lengths of the first three columns of an affine.
pub fn spacing_of(a: &Affine) -> [f64; 3] {
    std::array::from_fn(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt())
}

/// Orientation code of an affine's voxel axes (see [`super::Volume::orientation_code`]).
pub fn orientation_code(a: &Affine) -> String {
    (0..3)
        .map(|c| {
            let (r, v) = (0..3)
                .map(|r| (r, a[r][c]))
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                .expect("three rows");
            match (r, v >= 0.0) {
                (0, true) => 'R',
                (0, false) => 'L',
                (1, true) => 'A',
                (1, false) => 'P',
                (2, true) => 'S',
                _ => 'I',
            }
        })
        .collect()
}

/// Applies an affine to a point.
pub fn apply_affine(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

/// Product of two affines.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum()))
}

/// Inverse of an affine (last row `[0,0,0,1]`); `None` when the 3×3 part is singular or not finite.
pub fn invert_affine(a: &Affine) -> Option<Affine> {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    let scale = spacing_of(a).iter().product::<f64>();
    if !det.is_finite() || !scale.is_finite() || det.abs() <= 1e-12 * scale.max(1e-300) {
        return None;
    }
    let mut inv = identity();
    for (r, row) in inv.iter_mut().take(3).enumerate() {
        for (c, v) in row.iter_mut().take(3).enumerate() {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
        row[3] = -(0..3).map(|k| row[k] * a[k][3]).sum::<f64>();
    }
    if inv.iter().flatten().all(|v| v.is_finite()) {
        Some(inv)
    } else {
        None
    }
}

/// The top three rows of an affine as a user reads them: at most four decimals, no float noise
/// (`[[-1.2, 0, 0, 30], [0, 1, 0, 0], [0, 0, 2, -5.25]]`).
pub fn fmt_affine(a: &Affine) -> String {
    let row = |r: &[f64; 4]| {
        let cells: Vec<String> = r.iter().map(|&v| fmt_number(v)).collect();
        format!("[{}]", cells.join(", "))
    };
    let rows: Vec<String> = a.iter().take(3).map(row).collect();
    format!("[{}]", rows.join(", "))
}

/// A number with at most four decimals and no trailing zeros (`1.2000000476837158` → `1.2`).
pub fn fmt_number(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "-0" => "0".to_string(),
        s => s.to_string(),
    }
}
