//! The ~50 m grid that decides which location updates are worth pushing.
//!
//! `row = floor(lat / 0.00045)`, `col = floor(lng * cos(φ) / 0.00045)` with `φ = row * 0.00045`
//! degrees. Using the row's own latitude (not the raw one) for the cosine keeps every point of a
//! row on the same column scale, so cells never overlap and "moved" is just `(row, col)` changing.

use std::fmt;

/// Size of a cell side in degrees of latitude (~50 m).
pub const CELL_DEGREES: f64 = 0.00045;

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GridCell {
    pub row: i64,
    pub col: i64,
}

impl GridCell {
    /// The cell holding `(lat, lng)`. Inputs are expected to be validated (finite, in range).
    pub fn of(lat: f64, lng: f64) -> Self {
        let row = (lat / CELL_DEGREES).floor();
        let phi = (row * CELL_DEGREES).to_radians();
        let col = (lng * phi.cos() / CELL_DEGREES).floor();
        // `as` saturates for out-of-range floats, so even unvalidated input cannot panic here.
        Self { row: row as i64, col: col as i64 }
    }
}

impl fmt::Display for GridCell {
    /// `row:col`, the form stored beside a driver's latest location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.row, self.col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_contract_formula_in_san_francisco() {
        let cell = GridCell::of(37.77493, -122.41942);
        assert_eq!(cell.row, (37.77493f64 / 0.00045).floor() as i64);
        let phi = (cell.row as f64 * 0.00045).to_radians();
        assert_eq!(cell.col, (-122.41942 * phi.cos() / 0.00045).floor() as i64);
    }

    #[test]
    fn a_few_metres_stay_in_the_cell_and_a_hundred_metres_leave_it() {
        let base = GridCell::of(37.774_000_1, -122.419_000_1);
        assert_eq!(base, GridCell::of(37.774_01, -122.419_01));
        assert_ne!(base, GridCell::of(37.775, -122.419));
        assert_ne!(base, GridCell::of(37.774, -122.418));
    }

    #[test]
    fn poles_and_antimeridian_do_not_panic() {
        for (lat, lng) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (89.9999, 179.9999)] {
            let _ = GridCell::of(lat, lng);
        }
    }

    proptest! {
        #[test]
        fn the_same_point_always_gives_the_same_cell(lat in -90.0f64..=90.0, lng in -180.0f64..=180.0) {
            prop_assert_eq!(GridCell::of(lat, lng), GridCell::of(lat, lng));
        }

        #[test]
        fn points_a_cell_apart_in_latitude_are_in_different_cells(lat in -89.0f64..89.0, lng in -179.0f64..179.0) {
            prop_assert_ne!(GridCell::of(lat, lng), GridCell::of(lat + CELL_DEGREES * 1.01, lng));
        }
    }
}
