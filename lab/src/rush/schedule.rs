//! The arrival schedule of an opening rush: when each request is due.
//!
//! The rate rises linearly from zero to `peak_rate` during `ramp` — the
//! crowd gathering before the opening instant, which falls at the end of the
//! ramp — holds at the peak, then falls linearly back to zero during
//! `decline`. The hold lasts as long as it takes for the requests the rush
//! has to fire; a rush too small to reach its hold is scaled down in time.
//!
//! The generator is open loop: request `k` is due at [`Schedule::due`]`(k)`
//! whatever the server does, so a slow server shows up as latency and as
//! requests the generator could not send, never as a lower offered rate.

use std::time::Duration;

use serde::Serialize;

/// The shape of the rush.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shape {
    /// Requests per second at the peak.
    pub peak_rate: f64,
    /// From zero to the peak; the opening instant is at its end.
    pub ramp: Duration,
    /// From the peak back to zero.
    pub decline: Duration,
}

/// A shape fitted to a number of requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Schedule {
    pub shape: Shape,
    pub requests: usize,
    /// How long the rate holds at the peak.
    pub hold: Duration,
    /// `ramp`, `decline` and the peak, scaled when `requests` is too few to
    /// fill both slopes at the asked peak (same proportions, lower peak).
    scale: f64,
}

impl Schedule {
    /// Fits `shape` to `requests` arrivals.
    pub fn fit(shape: Shape, requests: usize) -> Self {
        let peak = shape.peak_rate.max(1.0);
        let slopes = peak * (shape.ramp.as_secs_f64() + shape.decline.as_secs_f64()) / 2.0;
        let n = requests as f64;
        if n >= slopes {
            let hold = (n - slopes) / peak;
            Schedule {
                shape: Shape { peak_rate: peak, ..shape },
                requests,
                hold: Duration::from_secs_f64(hold),
                scale: 1.0,
            }
        } else {
            // Both slopes with the peak lowered: n = peak·s · (ramp+decline)·s / 2.
            let scale = (n / slopes).sqrt();
            Schedule {
                shape: Shape {
                    peak_rate: peak * scale,
                    ramp: shape.ramp.mul_f64(scale),
                    decline: shape.decline.mul_f64(scale),
                },
                requests,
                hold: Duration::ZERO,
                scale,
            }
        }
    }

    /// The opening instant, from the start of the schedule.
    pub fn opening(&self) -> Duration {
        self.shape.ramp
    }

    /// The whole schedule's length.
    pub fn length(&self) -> Duration {
        self.shape.ramp + self.hold + self.shape.decline
    }

    /// Requests due before the opening instant (the ramp's share).
    pub fn before_opening(&self) -> usize {
        ((self.shape.peak_rate * self.shape.ramp.as_secs_f64() / 2.0).floor() as usize).min(self.requests)
    }

    /// When request `k` (0-based) is due, from the start: the inverse of the
    /// cumulative arrivals at `k + 0.5` (the middle of its share).
    pub fn due(&self, k: usize) -> Duration {
        let peak = self.shape.peak_rate;
        let ramp = self.shape.ramp.as_secs_f64();
        let hold = self.hold.as_secs_f64();
        let decline = self.shape.decline.as_secs_f64();
        let x = (k as f64 + 0.5).min(self.requests as f64);
        let in_ramp = peak * ramp / 2.0;
        let in_hold = peak * hold;
        let t = if x <= in_ramp && ramp > 0.0 {
            // x = peak·t²/(2·ramp)
            (2.0 * ramp * x / peak).sqrt()
        } else if x <= in_ramp + in_hold {
            ramp + (x - in_ramp) / peak
        } else if decline > 0.0 {
            // x − before = peak·u − peak·u²/(2·decline), solved for u ≤ decline
            let left = (x - in_ramp - in_hold).min(peak * decline / 2.0);
            let disc = (1.0 - 2.0 * left / (peak * decline)).max(0.0);
            ramp + hold + decline * (1.0 - disc.sqrt())
        } else {
            ramp + hold
        };
        Duration::from_secs_f64(t.max(0.0))
    }

    /// Whether the asked peak was lowered to fit the requests.
    pub fn scaled(&self) -> bool {
        self.scale < 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(peak: f64, ramp: u64, decline: u64) -> Shape {
        Shape { peak_rate: peak, ramp: Duration::from_secs(ramp), decline: Duration::from_secs(decline) }
    }

    #[test]
    fn the_hold_lasts_as_long_as_the_requests_need() {
        // 1,000/s: 5 s of ramp (2,500), 5 s of decline (2,500), 20 s of hold.
        let s = Schedule::fit(shape(1_000.0, 5, 5), 25_000);
        assert!((s.hold.as_secs_f64() - 20.0).abs() < 1e-6, "{:?}", s.hold);
        assert_eq!(s.before_opening(), 2_500);
        assert_eq!(s.opening(), Duration::from_secs(5));
        assert!((s.length().as_secs_f64() - 30.0).abs() < 1e-6);
    }

    #[test]
    fn arrivals_are_in_order_and_follow_the_rate() {
        let s = Schedule::fit(shape(1_000.0, 5, 5), 25_000);
        let mut last = Duration::ZERO;
        for k in 0..25_000 {
            let due = s.due(k);
            assert!(due >= last, "request {k} due before {}", k - 1);
            last = due;
        }
        // The 2,500th request arrives at the opening instant; the middle of
        // the hold runs at the peak rate (1 ms apart).
        assert!((s.due(2_500).as_secs_f64() - 5.0).abs() < 0.01);
        let gap = s.due(10_001).as_secs_f64() - s.due(10_000).as_secs_f64();
        assert!((gap - 0.001).abs() < 1e-9, "{gap}");
        assert!(s.due(24_999) <= s.length());
        // Half the ramp's time gives a quarter of its arrivals.
        assert!((s.due(625).as_secs_f64() - 2.5).abs() < 0.01);
    }

    #[test]
    fn a_small_rush_lowers_its_peak_instead_of_holding() {
        let s = Schedule::fit(shape(1_000.0, 5, 5), 1_000);
        assert!(s.scaled());
        assert_eq!(s.hold, Duration::ZERO);
        assert!(s.shape.peak_rate < 1_000.0);
        assert!(s.due(999) <= s.length() + Duration::from_millis(1));
    }

    #[test]
    fn no_ramp_means_open_from_the_first_request() {
        let s = Schedule::fit(shape(100.0, 0, 0), 100);
        assert_eq!(s.before_opening(), 0);
        assert!((s.due(0).as_secs_f64() - 0.005).abs() < 1e-9);
        assert!((s.due(99).as_secs_f64() - 0.995).abs() < 1e-9);
    }
}
