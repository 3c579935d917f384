//! A small seeded pseudo-random generator for simulations: the demo's drivers and chatter, and
//! the load generator's street walkers.
//!
//! Simulations need cheap, reproducible dice (which street to turn into, how fast to drive,
//! whether to accept an offer), not secrets. A seed fixes a whole run, so a run can be repeated
//! to debug it and a path can be tested exactly. SplitMix64 is a dozen lines, needs no
//! dependency and passes BigCrush.
//!
//! It is predictable by design: never use it for tokens, ids that must be unguessable, or
//! anything else an attacker must not guess. Those come from the operating system's generator.
#![forbid(unsafe_code)]

/// SplitMix64 (Steele, Lea and Flood, 2014): one `u64` of state, advanced by a constant and
/// mixed on every draw.
///
/// Each simulated actor owns one, so actors do not share a lock or disturb each other's
/// sequences. A given seed yields the same sequence on every platform and in every release.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for the `n`th of several independent streams from one seed.
    ///
    /// Plain `new(seed + n)` would give neighbouring actors overlapping sequences shifted by a
    /// draw or two; mixing `n` into the seed first starts each stream far from the others.
    pub fn stream(seed: u64, n: u64) -> Self {
        let mut mixer = Self(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits: exactly the precision of an f64 mantissa, so every value is equally
        // likely and 1.0 is never reached.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high)`: `low + (high - low) * unit()`.
    ///
    /// Floating-point rounding can, very rarely, land on `high` itself.
    pub fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n`; `0` when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        // Modulo bias is `n / 2^64`: below 2^-40 for any `n` a simulation uses.
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `true` with probability `p` (never for `p <= 0`, always for `p >= 1`); one draw, exactly
    /// `unit() < p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal deviate (mean 0, standard deviation 1), by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // in (0, 1]: its logarithm is finite
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// One of `items`, uniformly.
    ///
    /// # Panics
    /// When `items` is empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 10_000;

    #[test]
    fn the_sequence_is_splitmix64_so_recorded_seeds_replay_forever() {
        // The reference outputs of SplitMix64 from state 0.
        let mut rng = Rng::new(0);
        assert_eq!(
            [rng.next_u64(), rng.next_u64(), rng.next_u64()],
            [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F]
        );
    }

    #[test]
    fn a_seed_fixes_every_draw() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert_eq!(a.between(8.0, 14.0), b.between(8.0, 14.0));
            assert_eq!(a.normal(), b.normal());
            assert_eq!(a.pick(&[1, 2, 3]), b.pick(&[1, 2, 3]));
        }
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let first: Vec<u64> = (0..10).map(|seed| Rng::new(seed).next_u64()).collect();
        let mut unique = first.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), first.len(), "two seeds among 0..10 started alike: {first:x?}");
    }

    #[test]
    fn streams_of_one_seed_are_reproducible_and_independent() {
        let draws = |n| {
            let mut rng = Rng::stream(7, n);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        for (a, b) in [(0, 1), (1, 2), (2, 3), (0, 1000)] {
            let (da, db) = (draws(a), draws(b));
            // Neither a copy nor a shifted copy of the other.
            assert!(da.iter().all(|x| !db.contains(x)), "streams {a} and {b} share draws");
        }
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(8, 1).next_u64());
    }

    #[test]
    fn unit_is_in_zero_to_one_and_averages_a_half() {
        let mut rng = Rng::new(42);
        let draws: Vec<f64> = (0..DRAWS).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / DRAWS as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn between_stays_in_its_range_and_covers_it() {
        let mut rng = Rng::new(42);
        let draws: Vec<f64> = (0..DRAWS).map(|_| rng.between(7.0, 14.0)).collect();
        assert!(draws.iter().all(|x| (7.0..14.0).contains(x)));
        let (low, high) = draws.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(low < 7.01 && high > 13.99, "drew only {low}..{high}");
        assert_eq!(rng.between(3.0, 3.0), 3.0);
    }

    #[test]
    fn below_stays_under_its_bound_and_reaches_every_value() {
        let mut rng = Rng::new(42);
        let mut seen = [0u32; 5];
        for _ in 0..DRAWS {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|&n| (1_800..2_200).contains(&n)), "counts {seen:?}");
        assert_eq!(rng.below(1), 0);
        assert_eq!(rng.below(0), 0, "an empty range gives 0 rather than dividing by zero");
    }

    #[test]
    fn chance_holds_its_probability() {
        let mut rng = Rng::new(42);
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let hits = (0..DRAWS).filter(|_| rng.chance(0.3)).count();
        assert!((2_800..3_200).contains(&hits), "{hits} of {DRAWS} at p = 0.3");
    }

    #[test]
    fn chance_is_one_unit_draw_compared_with_p() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        for _ in 0..1000 {
            assert_eq!(a.chance(0.3), b.unit() < 0.3);
        }
    }

    #[test]
    fn normal_has_mean_zero_and_standard_deviation_one() {
        let mut rng = Rng::new(42);
        let draws: Vec<f64> = (0..DRAWS).map(|_| rng.normal()).collect();
        assert!(draws.iter().all(|x| x.is_finite()));
        let mean = draws.iter().sum::<f64>() / DRAWS as f64;
        let sd = (draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / DRAWS as f64).sqrt();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((sd - 1.0).abs() < 0.05, "standard deviation {sd}");
    }

    #[test]
    fn pick_returns_every_item_and_nothing_else() {
        let mut rng = Rng::new(42);
        let items = ['a', 'b', 'c'];
        let picked: Vec<char> = (0..300).map(|_| rng.pick(&items)).collect();
        for item in items {
            assert!(picked.contains(&item), "{item} never picked");
        }
        assert!(picked.iter().all(|c| items.contains(c)));
        assert_eq!(rng.pick(&[9]), 9);
    }
}
