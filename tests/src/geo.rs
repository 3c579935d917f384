//! The contract's ~50 m grid, written out again from `PROTOCOL.md`, and routes through it.
//!
//! `row = floor(lat / 0.00045)`, `col = floor(lng * cos(φ) / 0.00045)` with `φ = row * 0.00045`
//! degrees. The formula is deliberately re-typed here rather than taken from
//! `ridecast_protocol::GridCell`, so that a mistake shared by the protocol crate and the origin
//! still shows up.

/// A cell side in degrees of latitude.
pub const CELL: f64 = 0.00045;

/// `(row, col)` of the cell holding `(lat, lng)`, by the contract's formula.
pub fn cell_of(lat: f64, lng: f64) -> (i64, i64) {
    let row = (lat / CELL).floor();
    let phi = (row * CELL).to_radians();
    let col = (lng * phi.cos() / CELL).floor();
    (row as i64, col as i64)
}

/// The point at fractions `(fy, fx)` (each in `(0, 1)`) across cell `(row, col)`.
pub fn point_in_cell(row: i64, col: i64, fy: f64, fx: f64) -> (f64, f64) {
    let lat = (row as f64 + fy) * CELL;
    let cos_phi = (row as f64 * CELL).to_radians().cos();
    let lng = (col as f64 + fx) * CELL / cos_phi;
    let point = (lat, lng);
    debug_assert_eq!(cell_of(lat, lng), (row, col));
    point
}

/// A walk through the grid starting in San Francisco: step `k` is a cell three rows north of
/// step `k - 1`, far enough (~150 m) that every step is a cell change.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    row: i64,
    col: i64,
}

/// Points inside one cell, as fractions of the cell, away from its edges.
const NUDGES: [(f64, f64); 6] = [(0.5, 0.5), (0.2, 0.25), (0.8, 0.3), (0.3, 0.8), (0.75, 0.7), (0.6, 0.15)];

impl Route {
    /// A route through the cell of 37.7749, -122.4194.
    pub fn san_francisco() -> Self {
        Self::from(37.7749, -122.4194)
    }

    /// A route starting in the cell of `(lat, lng)`.
    pub fn from(lat: f64, lng: f64) -> Self {
        let (row, col) = cell_of(lat, lng);
        Self { row, col }
    }

    /// The cell of step `k`.
    pub fn cell(&self, k: u32) -> (i64, i64) {
        (self.row + 3 * i64::from(k), self.col)
    }

    /// The centre of step `k`'s cell.
    pub fn point(&self, k: u32) -> (f64, f64) {
        self.nudge(k, 0)
    }

    /// Another point in step `k`'s cell: `j` picks one of a few positions (0 is the centre).
    pub fn nudge(&self, k: u32, j: usize) -> (f64, f64) {
        let (row, col) = self.cell(k);
        let (fy, fx) = NUDGES[j % NUDGES.len()];
        let point = point_in_cell(row, col, fy, fx);
        assert_eq!(cell_of(point.0, point.1), (row, col), "nudge {j} of step {k} left its cell");
        point
    }

    /// A point one column east of step `k`'s cell, in the same row.
    pub fn east_of(&self, k: u32) -> (f64, f64) {
        let (row, col) = self.cell(k);
        point_in_cell(row, col + 1, 0.5, 0.5)
    }
}

/// Two points in the same row and, by the contract, the same cell — but whose column would
/// differ if `cos` were taken of the raw latitude instead of the row's latitude `φ`.
///
/// Moving between them is *not* a cell change; an origin that pushes it has the formula wrong.
pub fn same_cell_pair_that_cos_lat_would_split(lat: f64, lng: f64) -> ((f64, f64), (f64, f64)) {
    let (row, _) = cell_of(lat, lng);
    let south = (row as f64 + 0.02) * CELL;
    let north = (row as f64 + 0.98) * CELL;
    let naive_col = |lat: f64, lng: f64| (lng * lat.to_radians().cos() / CELL).floor() as i64;
    let mut candidate = lng;
    for _ in 0..100_000 {
        candidate += 0.000_001;
        let a = (south, candidate);
        let b = (north, candidate);
        if cell_of(a.0, a.1) == cell_of(b.0, b.1) && naive_col(a.0, a.1) != naive_col(b.0, b.1) {
            return (a, b);
        }
    }
    panic!("no point near {lat},{lng} where cos(lat) and cos(φ) disagree on the column");
}
