//! A vehicle moving along a path of points: where it is, which way it faces, what is left.

use std::collections::VecDeque;

use super::geometry::Point;

/// A position following a queue of points, one straight segment at a time.
#[derive(Debug, Clone)]
pub struct Motion {
    at: Point,
    /// Degrees clockwise from north; kept when standing still.
    heading: f64,
    ahead: VecDeque<Point>,
}

impl Motion {
    pub fn new(at: Point) -> Self {
        Self { at, heading: 0.0, ahead: VecDeque::new() }
    }

    pub fn at(&self) -> Point {
        self.at
    }

    pub fn heading(&self) -> f64 {
        self.heading
    }

    /// Drops what was ahead and follows `path` instead.
    pub fn follow(&mut self, path: impl IntoIterator<Item = Point>) {
        self.ahead.clear();
        self.ahead.extend(path);
    }

    /// Adds `point` at the end of the path.
    pub fn then(&mut self, point: Point) {
        self.ahead.push_back(point);
    }

    /// Metres left to the end of the path.
    pub fn remaining(&self) -> f64 {
        let mut from = self.at;
        let mut total = 0.0;
        for &next in &self.ahead {
            total += from.distance(next);
            from = next;
        }
        total
    }

    pub fn arrived(&self) -> bool {
        self.ahead.is_empty()
    }

    /// Moves `metres` along the path, or to its end if it is shorter.
    pub fn advance(&mut self, mut metres: f64) {
        while let Some(&next) = self.ahead.front() {
            let gap = self.at.distance(next);
            if gap > 1e-9 {
                self.heading = self.at.heading_to(next);
            }
            if gap > metres {
                self.at = self.at.toward(next, metres / gap);
                return;
            }
            metres -= gap;
            self.at = next;
            self.ahead.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_along_the_path_turning_at_its_corners_and_stops_at_its_end() {
        let mut motion = Motion::new(Point::new(0.0, 0.0));
        motion.follow([Point::new(0.0, 100.0), Point::new(50.0, 100.0)]);
        assert_eq!(motion.remaining(), 150.0);
        motion.advance(40.0);
        assert_eq!((motion.at(), motion.heading()), (Point::new(0.0, 40.0), 0.0));
        motion.advance(70.0);
        assert!(motion.at().distance(Point::new(10.0, 100.0)) < 1e-9, "{:?}", motion.at());
        assert_eq!(motion.heading(), 90.0);
        motion.advance(1_000.0);
        assert_eq!(motion.at(), Point::new(50.0, 100.0));
        assert!(motion.arrived());
        motion.advance(10.0);
        assert_eq!((motion.at(), motion.heading()), (Point::new(50.0, 100.0), 90.0), "standing still");
    }
}
