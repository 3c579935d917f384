//! Latency statistics: a log-linear histogram that can be recorded into from many tasks at once,
//! merged across worker processes and asked for percentiles.
//!
//! Keeping every sample would cost 8 bytes per delivered event (tens of millions in a long run)
//! and would have to cross process boundaries as JSON. A histogram with 256 linear sub-buckets per
//! power of two keeps the relative error under 0.4 % in a fixed 40 KiB, and merging is adding.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Linear sub-buckets per power of two, as a power of two. 8 gives 256 sub-buckets.
const SUB_BITS: u32 = 8;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF_SUB: u64 = SUB_COUNT / 2;
/// Largest power of two covered: 2^40 µs is twelve days, far beyond any latency.
const MAX_EXP: u32 = 40;
/// Number of buckets: the exact range `0..SUB_COUNT`, then `HALF_SUB` per further power of two.
const BUCKETS: usize = (SUB_COUNT + (MAX_EXP - SUB_BITS + 1) as u64 * HALF_SUB) as usize;

/// Index of the bucket that holds `value`.
fn bucket_of(value: u64) -> usize {
    let value = value.min((1u64 << (MAX_EXP + 1)) - 1);
    if value < SUB_COUNT {
        return value as usize;
    }
    let exp = 63 - value.leading_zeros(); // floor(log2(value)), at least SUB_BITS
    let shift = exp - SUB_BITS + 1;
    let sub = value >> shift; // in HALF_SUB..SUB_COUNT
    (SUB_COUNT + u64::from(shift - 1) * HALF_SUB + (sub - HALF_SUB)) as usize
}

/// Smallest and largest value that land in bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_COUNT {
        return (index, index);
    }
    let shift = (index - SUB_COUNT) / HALF_SUB + 1;
    let sub = (index - SUB_COUNT) % HALF_SUB + HALF_SUB;
    let low = sub << shift;
    (low, low + (1u64 << shift) - 1)
}

/// A histogram of non-negative integer samples (microseconds, in practice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
    /// Non-empty buckets as `(index, count)`, sorted by index.
    buckets: Vec<(u32, u64)>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { count: 0, sum: 0, min: u64::MAX, max: 0, buckets: Vec::new() }
    }
}

impl Histogram {
    /// A histogram of the given samples (for tests and small data).
    pub fn from_samples(samples: &[u64]) -> Self {
        let recorder = AtomicHistogram::new();
        for &sample in samples {
            recorder.record(sample);
        }
        recorder.snapshot()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Adds every sample of `other` to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        let (ours, theirs) = (&self.buckets, &other.buckets);
        let mut merged = Vec::with_capacity(ours.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while i < ours.len() || j < theirs.len() {
            if j == theirs.len() || (i < ours.len() && ours[i].0 < theirs[j].0) {
                merged.push(ours[i]);
                i += 1;
            } else if i == ours.len() || theirs[j].0 < ours[i].0 {
                merged.push(theirs[j]);
                j += 1;
            } else {
                merged.push((ours[i].0, ours[i].1 + theirs[j].1));
                i += 1;
                j += 1;
            }
        }
        self.buckets = merged;
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0.0 to 1.0): the smallest recorded value such that at least
    /// `q` of all samples are at or below it, within the bucket's resolution.
    ///
    /// The bucket's upper bound is reported (never understating a latency), clamped to the
    /// exact maximum so that `quantile(1.0) == max`.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(index, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                let (_, high) = bucket_bounds(index as usize);
                return Some(high.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// The usual percentiles, for reports.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            mean: self.mean(),
            min: self.min(),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max(),
        }
    }
}

/// Percentiles of a [`Histogram`]; `None` when it holds no sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean: Option<f64>,
    pub min: Option<u64>,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: Option<u64>,
}

/// A histogram that thousands of tasks record into without a lock.
///
/// Every bucket is an atomic counter; recording is one relaxed `fetch_add` per bucket plus the
/// running count, sum, min and max. [`AtomicHistogram::snapshot`] turns it into a [`Histogram`].
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicHistogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.min.fetch_min(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// The samples recorded so far. Samples recorded while the snapshot is taken may or may not
    /// be in it, and count/sum may then disagree with the buckets by those few samples; the
    /// count is taken from the buckets so that quantiles stay consistent.
    pub fn snapshot(&self) -> Histogram {
        let buckets: Vec<(u32, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u32, n))
            })
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        Histogram {
            count,
            sum: self.sum.load(Ordering::Relaxed),
            min: self.min.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..SUB_COUNT {
            assert_eq!(bucket_bounds(bucket_of(v)), (v, v));
        }
    }

    #[test]
    fn every_value_lands_in_a_bucket_whose_bounds_hold_it() {
        let mut v = 1u64;
        while v < 1 << 40 {
            for probe in [v - 1, v, v + 1, v + v / 3] {
                let (low, high) = bucket_bounds(bucket_of(probe));
                assert!(low <= probe && probe <= high, "{probe} not in [{low}, {high}]");
                assert!((high - low) as f64 <= probe as f64 / 128.0, "bucket of {probe} too wide: [{low}, {high}]");
            }
            v = v * 3 / 2 + 1;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn buckets_are_ordered_like_values() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(977) {
            let b = bucket_of(v);
            assert!(b >= last, "bucket order broke at {v}");
            last = b;
        }
    }

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let samples: Vec<u64> = (1..=1000).collect();
        let h = Histogram::from_samples(&samples);
        let within = |got: Option<u64>, want: u64| {
            let got = got.expect("has samples");
            assert!(got >= want && got as f64 <= want as f64 * 1.008, "got {got}, want about {want}");
        };
        within(h.quantile(0.5), 500);
        within(h.quantile(0.9), 900);
        within(h.quantile(0.99), 990);
        within(h.quantile(0.999), 999);
        assert_eq!(h.max(), Some(1000));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.quantile(1.0), Some(1000));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.mean(), Some(500.5));
    }

    #[test]
    fn one_outlier_shows_only_at_the_top() {
        let mut samples = vec![100u64; 9999];
        samples.push(5_000_000);
        let h = Histogram::from_samples(&samples);
        assert_eq!(h.quantile(0.99), Some(100));
        assert_eq!(h.quantile(0.999), Some(100));
        assert_eq!(h.max(), Some(5_000_000));
    }

    #[test]
    fn empty_histograms_have_no_percentiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.summary().max, None);
        assert_eq!(h.summary().count, 0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let a: Vec<u64> = (0..5000).map(|i| i * 37 % 10_007).collect();
        let b: Vec<u64> = (0..3000).map(|i| 20_000 + i * 91 % 50_000).collect();
        let mut merged = Histogram::from_samples(&a);
        merged.merge(&Histogram::from_samples(&b));
        merged.merge(&Histogram::default());
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, Histogram::from_samples(&all));
    }

    #[test]
    fn survives_a_json_round_trip() {
        let h = Histogram::from_samples(&[1, 2, 3, 1000, 123_456]);
        let back: Histogram = serde_json::from_str(&serde_json::to_string(&h).expect("serializes")).expect("parses");
        assert_eq!(back, h);
    }
}
