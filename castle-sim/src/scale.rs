//! Modelled time: a simulator models its durations in seconds and plays them at a
//! scale.

use std::time::Duration;

/// Real seconds per modelled second: [`Scale::REAL`] plays a model in real time,
/// `Scale(0.01)` a hundred times faster, [`Scale::INSTANT`] in no time at all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scale(pub f64);

impl Scale {
    /// Everything takes no time (unit tests).
    pub const INSTANT: Self = Self(0.0);
    /// Real time (the calibrated models as measured).
    pub const REAL: Self = Self(1.0);

    /// The real time that `modelled` seconds take; none when that is negative.
    pub fn of(self, modelled: f64) -> Duration {
        Duration::from_secs_f64((modelled * self.0).max(0.0))
    }

    /// Sleeps for `modelled` seconds on tokio's clock, so that a test on a paused
    /// clock sees exactly that much time pass; returns at once, without yielding,
    /// when that comes to no time.
    pub async fn sleep(self, modelled: f64) {
        let real = self.of(modelled);
        if !real.is_zero() {
            tokio::time::sleep(real).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn modelled_seconds_take_seconds_times_scale() {
        assert_eq!(Scale::REAL.of(2.5), Duration::from_millis(2500));
        assert_eq!(Scale(0.01).of(60.0), Duration::from_millis(600));
        assert_eq!(Scale::INSTANT.of(60.0), Duration::ZERO);
        assert_eq!(Scale::REAL.of(-1.0), Duration::ZERO);
        assert_eq!(Scale(f64::NAN).of(1.0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_on_a_paused_clock_takes_exactly_the_scaled_time() {
        let start = Instant::now();
        Scale(0.5).sleep(3.0).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        Scale::REAL.sleep(40.0).await;
        assert_eq!(start.elapsed(), Duration::from_millis(41_500));
    }

    #[test]
    fn no_time_is_no_sleep() {
        // Ready at the first poll, and outside any runtime: a tokio sleep, even of
        // zero, would need a timer and could yield.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(pin!(Scale::INSTANT.sleep(60.0)).poll(&mut cx).is_ready());
        assert!(pin!(Scale::REAL.sleep(0.0)).poll(&mut cx).is_ready());
        assert!(pin!(Scale::REAL.sleep(-3.0)).poll(&mut cx).is_ready());
    }
}
