//! Flat geometry for a city a couple of kilometres across: points in metres east and north of
//! its centre, and the conversion to and from latitude and longitude.
//!
//! Over 2 km an equirectangular projection is off by millimetres, and metres make speeds,
//! distances and noise plain arithmetic.

use ridecast_protocol::LatLng;

/// Metres per degree of latitude, on the sphere dispatch measures distances on
/// (`ridecast_origin::dispatch::distance_m`), so that a simulated 100 m is dispatch's 100 m.
const METRES_PER_DEGREE: f64 = 6_372_797.560_856 * std::f64::consts::PI / 180.0;

/// A point in metres: `x` east and `y` north of the city's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    pub fn distance(self, other: Point) -> f64 {
        (other.x - self.x).hypot(other.y - self.y)
    }

    /// The point a fraction `t` of the way to `other`.
    pub fn toward(self, other: Point, t: f64) -> Point {
        Point::new(self.x + (other.x - self.x) * t, self.y + (other.y - self.y) * t)
    }

    /// The compass heading from here to `other`, in degrees clockwise from north, in `[0, 360)`.
    pub fn heading_to(self, other: Point) -> f64 {
        let heading = (other.x - self.x).atan2(other.y - self.y).to_degrees().rem_euclid(360.0);
        // rem_euclid can round up to exactly 360.0 for tiny negative angles.
        if heading >= 360.0 { 0.0 } else { heading }
    }
}

/// The nearest point to `p` on the segment `a`–`b`.
pub fn nearest_on_segment(p: Point, a: Point, b: Point) -> Point {
    let (dx, dy) = (b.x - a.x, b.y - a.y);
    let length_squared = dx * dx + dy * dy;
    if length_squared == 0.0 {
        return a;
    }
    let t = (((p.x - a.x) * dx + (p.y - a.y) * dy) / length_squared).clamp(0.0, 1.0);
    a.toward(b, t)
}

/// An axis-aligned rectangle in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub min: Point,
    pub max: Point,
}

impl Rect {
    pub fn contains(&self, p: Point) -> bool {
        (self.min.x..=self.max.x).contains(&p.x) && (self.min.y..=self.max.y).contains(&p.y)
    }
}

/// The projection between metres around `centre` and latitude and longitude.
#[derive(Debug, Clone, Copy)]
pub struct Projection {
    centre: LatLng,
    metres_per_degree_lng: f64,
}

impl Projection {
    pub fn new(centre: LatLng) -> Self {
        Self { centre, metres_per_degree_lng: METRES_PER_DEGREE * centre.lat.to_radians().cos() }
    }

    pub fn centre(&self) -> LatLng {
        self.centre
    }

    pub fn to_lat_lng(&self, p: Point) -> LatLng {
        LatLng {
            lat: self.centre.lat + p.y / METRES_PER_DEGREE,
            lng: self.centre.lng + p.x / self.metres_per_degree_lng,
        }
    }

    pub fn to_point(&self, at: LatLng) -> Point {
        Point::new(
            (at.lng - self.centre.lng) * self.metres_per_degree_lng,
            (at.lat - self.centre.lat) * METRES_PER_DEGREE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridecast_origin::dispatch::distance_m;

    #[test]
    fn a_projected_metre_is_a_metre_to_dispatch() {
        let projection = Projection::new(LatLng { lat: 37.7793, lng: -122.4193 });
        let (a, b) = (Point::new(-300.0, 200.0), Point::new(400.0, -100.0));
        let measured = distance_m(projection.to_lat_lng(a), projection.to_lat_lng(b));
        assert!((measured - a.distance(b)).abs() < 0.5, "{measured} m vs {} m", a.distance(b));
        let back = projection.to_point(projection.to_lat_lng(a));
        assert!(back.distance(a) < 1e-6, "{back:?}");
    }

    #[test]
    fn headings_are_compass_degrees() {
        let o = Point::new(0.0, 0.0);
        for (to, heading) in [((0.0, 1.0), 0.0), ((1.0, 0.0), 90.0), ((0.0, -1.0), 180.0), ((-1.0, 0.0), 270.0)] {
            assert!((o.heading_to(Point::new(to.0, to.1)) - heading).abs() < 1e-9, "{to:?}");
        }
    }

    #[test]
    fn the_nearest_point_on_a_segment_stays_on_it() {
        let (a, b) = (Point::new(0.0, 0.0), Point::new(10.0, 0.0));
        assert_eq!(nearest_on_segment(Point::new(3.0, 5.0), a, b), Point::new(3.0, 0.0));
        assert_eq!(nearest_on_segment(Point::new(-4.0, 1.0), a, b), a);
        assert_eq!(nearest_on_segment(Point::new(14.0, -1.0), a, b), b);
    }
}
