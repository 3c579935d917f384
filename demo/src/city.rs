//! The demo's city: a street grid around San Francisco's Market St, with two diagonal avenues,
//! as a graph of corners and street segments. Simulated drivers route along it (shortest path
//! between two points, both moved onto the nearest street) and cruise it at random; the web
//! pages draw it from [`City::to_json`] (`GET /demo/city.json`).

use ridecast_rng::Rng;
use std::{cmp::Ordering, collections::BinaryHeap};

use ridecast_protocol::LatLng;
use serde::Serialize;

use super::geometry::{Point, Projection, Rect, nearest_on_segment};

/// The centre of the map: Market St at 8th St, San Francisco.
pub const CENTRE: LatLng = LatLng { lat: 37.7793, lng: -122.4193 };
/// The surge zone the simulator sets, in the middle of the map.
pub const DOWNTOWN: &str = "downtown";

/// Streets each way: 12 blocks by 12.
const GRID: usize = 13;
const BLOCK_M: f64 = 110.0;
/// Map edge beyond the outermost streets, so that GPS noise stays on the map.
const MARGIN_M: f64 = 80.0;
/// Blocks from the centre the downtown zone reaches, each way.
const DOWNTOWN_BLOCKS: f64 = 3.0;

/// North–south streets, west to east.
const NORTH_SOUTH: [&str; GRID] = [
    "Polk St",
    "Larkin St",
    "Hyde St",
    "Leavenworth St",
    "Jones St",
    "Taylor St",
    "Mason St",
    "Powell St",
    "Stockton St",
    "Grant Ave",
    "Kearny St",
    "Montgomery St",
    "Sansome St",
];
/// East–west streets, north to south.
const EAST_WEST: [&str; GRID] = [
    "Bush St",
    "Sutter St",
    "Post St",
    "Geary St",
    "O'Farrell St",
    "Ellis St",
    "Eddy St",
    "Turk St",
    "Golden Gate Ave",
    "McAllister St",
    "Fulton St",
    "Grove St",
    "Hayes St",
];

/// A named street: the corners it passes, in order.
#[derive(Debug, Clone)]
pub struct Street {
    pub name: &'static str,
    corners: Vec<usize>,
}

/// A named area of the map (a surge zone).
#[derive(Debug, Clone)]
pub struct Zone {
    pub id: &'static str,
    pub name: &'static str,
    pub area: Rect,
}

/// Where a point lands on the streets: the nearest street point and the segment it is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snap {
    pub point: Point,
    /// The segment's two corners.
    pub segment: (usize, usize),
}

/// A random walk's place: between the corner behind it and the one it drives to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    behind: usize,
    ahead: usize,
}

/// The city: corners (graph nodes), segments between neighbouring corners (edges), streets.
#[derive(Debug, Clone)]
pub struct City {
    projection: Projection,
    corners: Vec<Point>,
    /// Each corner's neighbours.
    neighbours: Vec<Vec<usize>>,
    /// Every segment once.
    segments: Vec<(usize, usize)>,
    streets: Vec<Street>,
    zones: Vec<Zone>,
    bounds: Rect,
}

impl City {
    /// The demo city: 13 by 13 streets 110 m apart, Market St from the south-west corner to the
    /// north-east one and Columbus Ave across it, crossing at the centre.
    pub fn demo() -> Self {
        let half = (GRID - 1) as f64 / 2.0;
        let corner = |row: usize, col: usize| row * GRID + col;
        let corners = (0..GRID * GRID)
            .map(|n| Point::new((((n % GRID) as f64) - half) * BLOCK_M, (half - (n / GRID) as f64) * BLOCK_M))
            .collect();
        let reach = half * BLOCK_M + MARGIN_M;
        let downtown = DOWNTOWN_BLOCKS * BLOCK_M;
        let mut city = Self {
            projection: Projection::new(CENTRE),
            corners,
            neighbours: vec![Vec::new(); GRID * GRID],
            segments: Vec::new(),
            streets: Vec::new(),
            zones: vec![Zone {
                id: DOWNTOWN,
                name: "Downtown",
                area: Rect { min: Point::new(-downtown, -downtown), max: Point::new(downtown, downtown) },
            }],
            bounds: Rect { min: Point::new(-reach, -reach), max: Point::new(reach, reach) },
        };
        for (col, name) in NORTH_SOUTH.into_iter().enumerate() {
            city.add_street(name, (0..GRID).map(|row| corner(row, col)).collect());
        }
        for (row, name) in EAST_WEST.into_iter().enumerate() {
            city.add_street(name, (0..GRID).map(|col| corner(row, col)).collect());
        }
        city.add_street("Market St", (0..GRID).map(|i| corner(GRID - 1 - i, i)).collect());
        city.add_street("Columbus Ave", (0..GRID).map(|i| corner(i, i)).collect());
        city
    }

    fn add_street(&mut self, name: &'static str, corners: Vec<usize>) {
        for pair in corners.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            self.neighbours[a].push(b);
            self.neighbours[b].push(a);
            self.segments.push((a, b));
        }
        self.streets.push(Street { name, corners });
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The whole map, margin included: nothing on the streets lies outside it.
    pub fn bounds(&self) -> Rect {
        self.bounds
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    pub fn streets(&self) -> &[Street] {
        &self.streets
    }

    /// The points of `street`, corner by corner.
    pub fn street_points<'a>(&'a self, street: &'a Street) -> impl Iterator<Item = Point> + 'a {
        street.corners.iter().map(|&corner| self.corners[corner])
    }

    /// A point on a street chosen at random: where a simulated driver starts.
    pub fn random_street_point(&self, rng: &mut Rng) -> Point {
        let (a, b) = rng.pick(&self.segments);
        self.corners[a].toward(self.corners[b], rng.unit())
    }

    /// The street point nearest to `p`.
    pub fn snap(&self, p: Point) -> Snap {
        let mut best = Snap { point: self.corners[0], segment: self.segments[0] };
        let mut best_distance = f64::INFINITY;
        for &(a, b) in &self.segments {
            let on = nearest_on_segment(p, self.corners[a], self.corners[b]);
            let distance = on.distance(p);
            if distance < best_distance {
                (best, best_distance) = (Snap { point: on, segment: (a, b) }, distance);
            }
        }
        best
    }

    /// The shortest way along the streets from `from` to `to`: the street points nearest to
    /// each, and the corners between. Consecutive points are always on one street segment.
    pub fn route(&self, from: Point, to: Point) -> Vec<Point> {
        let (start, end) = (self.snap(from), self.snap(to));
        let same_segment = start.segment == end.segment || start.segment == (end.segment.1, end.segment.0);
        let mut points = vec![start.point];
        if !same_segment {
            let (a, b) = start.segment;
            let sources = [(a, start.point.distance(self.corners[a])), (b, start.point.distance(self.corners[b]))];
            let (distance, previous) = self.shortest_paths(&sources);
            let (c, d) = end.segment;
            let to_end = |corner: usize| distance[corner] + self.corners[corner].distance(end.point);
            let mut corner = if to_end(c) <= to_end(d) { c } else { d };
            let mut corners = vec![corner];
            while let Some(before) = previous[corner] {
                corners.push(before);
                corner = before;
            }
            points.extend(corners.into_iter().rev().map(|corner| self.corners[corner]));
        }
        points.push(end.point);
        points.dedup_by(|b, a| a.distance(*b) < 1e-9);
        points
    }

    /// Dijkstra from several corners at once, each with a head start: distances and, for each
    /// corner, the one before it on its shortest path.
    fn shortest_paths(&self, sources: &[(usize, f64)]) -> (Vec<f64>, Vec<Option<usize>>) {
        let mut distance = vec![f64::INFINITY; self.corners.len()];
        let mut previous = vec![None; self.corners.len()];
        let mut queue = BinaryHeap::new();
        for &(corner, start) in sources {
            if start < distance[corner] {
                distance[corner] = start;
                queue.push(Queued { distance: start, corner });
            }
        }
        while let Some(Queued { distance: reached, corner }) = queue.pop() {
            if reached > distance[corner] {
                continue;
            }
            for &next in &self.neighbours[corner] {
                let through = reached + self.corners[corner].distance(self.corners[next]);
                if through < distance[next] {
                    distance[next] = through;
                    previous[next] = Some(corner);
                    queue.push(Queued { distance: through, corner: next });
                }
            }
        }
        (distance, previous)
    }

    /// Starts a random walk at `p`: onto the nearest street, towards either end of its segment.
    /// Returns the walk and the corner it drives to first.
    pub fn start_walk(&self, p: Point, rng: &mut Rng) -> (Walk, Point) {
        let (a, b) = self.snap(p).segment;
        let walk = if rng.below(2) == 0 { Walk { behind: a, ahead: b } } else { Walk { behind: b, ahead: a } };
        (walk, self.corners[walk.ahead])
    }

    /// The walk's next corner: any neighbour of the corner reached but the one it came from
    /// (a U-turn only at a dead end).
    pub fn step(&self, walk: &mut Walk, rng: &mut Rng) -> Point {
        let options: Vec<usize> =
            self.neighbours[walk.ahead].iter().copied().filter(|&next| next != walk.behind).collect();
        let next = if options.is_empty() { walk.behind } else { rng.pick(&options) };
        *walk = Walk { behind: walk.ahead, ahead: next };
        self.corners[next]
    }

    /// The `city.json` document the web pages draw the map from.
    pub fn to_json(&self) -> String {
        let lat_lng = |p: Point| rounded(self.projection.to_lat_lng(p));
        let bounds = |rect: Rect| {
            let (south_west, north_east) = (lat_lng(rect.min), lat_lng(rect.max));
            Bounds { south: south_west.lat, west: south_west.lng, north: north_east.lat, east: north_east.lng }
        };
        let document = CityJson {
            center: rounded(self.projection.centre()),
            bounds: bounds(self.bounds),
            streets: self
                .streets
                .iter()
                .map(|street| StreetJson {
                    name: street.name,
                    points: self.street_points(street).map(lat_lng).collect(),
                })
                .collect(),
            zones: self
                .zones
                .iter()
                .map(|zone| ZoneJson { id: zone.id, name: zone.name, bounds: bounds(zone.area) })
                .collect(),
        };
        serde_json::to_string(&document).unwrap_or_default()
    }
}

/// Degrees to 6 decimals (about 10 cm): short JSON, and no `37.779300000000006`.
fn rounded(at: LatLng) -> LatLng {
    let round = |degrees: f64| (degrees * 1e6).round() / 1e6;
    LatLng { lat: round(at.lat), lng: round(at.lng) }
}

/// A corner waiting in Dijkstra's queue, nearest first.
#[derive(Debug, PartialEq)]
struct Queued {
    distance: f64,
    corner: usize,
}

impl Eq for Queued {}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops the largest.
        other.distance.total_cmp(&self.distance).then(other.corner.cmp(&self.corner))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Serialize)]
struct CityJson {
    center: LatLng,
    bounds: Bounds,
    streets: Vec<StreetJson>,
    zones: Vec<ZoneJson>,
}

#[derive(Serialize)]
struct Bounds {
    south: f64,
    west: f64,
    north: f64,
    east: f64,
}

#[derive(Serialize)]
struct StreetJson {
    name: &'static str,
    points: Vec<LatLng>,
}

#[derive(Serialize)]
struct ZoneJson {
    id: &'static str,
    name: &'static str,
    bounds: Bounds,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `a` and `b` both lie on one street segment (within a millimetre).
    fn on_one_segment(city: &City, a: Point, b: Point) -> bool {
        city.segments.iter().any(|&(c, d)| {
            let (c, d) = (city.corners[c], city.corners[d]);
            nearest_on_segment(a, c, d).distance(a) < 1e-3 && nearest_on_segment(b, c, d).distance(b) < 1e-3
        })
    }

    #[test]
    fn every_street_point_is_inside_the_bounds() {
        let city = City::demo();
        assert_eq!(city.streets().len(), 2 * GRID + 2);
        for street in city.streets() {
            for point in city.street_points(street) {
                assert!(city.bounds().contains(point), "{} at {point:?}", street.name);
            }
        }
        let json: serde_json::Value = serde_json::from_str(&city.to_json()).expect("city.json is JSON");
        let bounds = &json["bounds"];
        let (south, west, north, east) =
            (bounds["south"].as_f64(), bounds["west"].as_f64(), bounds["north"].as_f64(), bounds["east"].as_f64());
        let (Some(south), Some(west), Some(north), Some(east)) = (south, west, north, east) else {
            panic!("bounds has south, west, north and east: {bounds}");
        };
        for street in json["streets"].as_array().expect("streets") {
            assert!(street["name"].is_string(), "{street}");
            for point in street["points"].as_array().expect("points") {
                let (lat, lng) = (point["lat"].as_f64().expect("lat"), point["lng"].as_f64().expect("lng"));
                assert!((south..=north).contains(&lat) && (west..=east).contains(&lng), "{point} outside {bounds}");
            }
        }
        assert_eq!(json["zones"][0]["id"], DOWNTOWN);
        let centre = json["center"].clone();
        assert_eq!((centre["lat"].as_f64(), centre["lng"].as_f64()), (Some(CENTRE.lat), Some(CENTRE.lng)));
    }

    #[test]
    fn routes_follow_the_streets_and_end_at_the_target() {
        let city = City::demo();
        let mut rng = Rng::new(1);
        for _ in 0..500 {
            let (from, to) = (city.random_street_point(&mut rng), city.random_street_point(&mut rng));
            let route = city.route(from, to);
            assert!(route[0].distance(from) < 1e-6, "starts where it was asked: {:?} vs {from:?}", route[0]);
            let last = route[route.len() - 1];
            assert!(last.distance(to) < 1e-6, "ends at the target: {last:?} vs {to:?}");
            for pair in route.windows(2) {
                assert!(on_one_segment(&city, pair[0], pair[1]), "{:?} to {:?} leaves the streets", pair[0], pair[1]);
            }
            // Along a grid with diagonals no route is longer than the Manhattan distance.
            let length: f64 = route.windows(2).map(|pair| pair[0].distance(pair[1])).sum();
            let manhattan = (to.x - from.x).abs() + (to.y - from.y).abs();
            assert!(length <= manhattan + 2.0 * BLOCK_M + 1e-6, "{length} m for {manhattan} m apart");
        }
    }

    #[test]
    fn a_point_off_the_streets_is_routed_from_and_to_the_nearest_street_point() {
        let city = City::demo();
        let (from, to) = (Point::new(30.0, 20.0), Point::new(-250.0, 450.0));
        let route = city.route(from, to);
        assert_eq!(route[0], city.snap(from).point);
        assert_eq!(route[route.len() - 1], city.snap(to).point);
        assert!(city.snap(to).point.distance(Point::new(-250.0, 440.0)) < 1e-9, "the street 10 m south");
    }

    #[test]
    fn the_random_walk_never_leaves_the_map() {
        let city = City::demo();
        let mut rng = Rng::new(2);
        let start = city.random_street_point(&mut rng);
        let (mut walk, mut at) = city.start_walk(start, &mut rng);
        assert!(on_one_segment(&city, start, at));
        for _ in 0..20_000 {
            let next = city.step(&mut walk, &mut rng);
            assert!(city.bounds().contains(next), "{next:?}");
            assert!(on_one_segment(&city, at, next), "{at:?} to {next:?} is not a street segment");
            assert!(next != at, "the walk moves on");
            at = next;
        }
    }
}
