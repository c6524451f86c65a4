//! Injected failures: seeded transient ones at a rate, permanent ones per operation.

use std::collections::BTreeMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// How often a simulator fails transiently, and from which seed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    seed: u64,
    rate: f64,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Transient faults on `rate` (0..=1) of the calls; the same seed fails the same
    /// calls.
    pub fn transient(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            rate: rate.clamp(0.0, 1.0),
        }
    }

    /// The faults of the `run`th opening of a lab seeded `seed`: SplitMix64 of the
    /// two, so each run draws another stream while the same seed and history draw
    /// the same streams.
    pub fn for_run(seed: u64, run: u64, rate: f64) -> Self {
        let mut z = seed.wrapping_add(run.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self::transient(z ^ (z >> 31), rate)
    }

    /// Another stream at the same rate, the `n`th after this one: one for each
    /// simulator of a lab, so that they do not fail in step.
    #[must_use]
    pub fn stream(self, n: u64) -> Self {
        Self {
            seed: self.seed.wrapping_add(n),
            ..self
        }
    }

    /// The seed of the transient faults.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The share of calls that fail transiently.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// An injected failure of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault<M = String> {
    /// A failure a retry may get past (the real system's 503, a reset connection);
    /// the call had no effect.
    Transient,
    /// What [`FaultInjector::fail_permanently`] set for the operation: every call
    /// gets it until the faults are cleared.
    Permanent(M),
}

/// One simulator's injected failures: the transient rate with its seeded
/// generator, and the permanent fault of each operation that has one. `M` is what
/// the simulator needs to answer a permanent fault, a message unless it says
/// otherwise.
#[derive(Debug)]
pub struct FaultInjector<M = String> {
    rate: f64,
    rng: StdRng,
    permanent: BTreeMap<String, M>,
}

impl<M> Default for FaultInjector<M> {
    /// No faults; the generator seeded with 0.
    fn default() -> Self {
        Self {
            rate: 0.0,
            rng: StdRng::seed_from_u64(0),
            permanent: BTreeMap::new(),
        }
    }
}

impl<M> FaultInjector<M> {
    /// Sets the transient faults and reseeds the generator from their seed.
    pub fn set(&mut self, faults: Faults) {
        self.rate = faults.rate;
        self.rng = StdRng::seed_from_u64(faults.seed);
    }

    /// Every later call known by `op` fails with `fault`.
    pub fn fail_permanently(&mut self, op: impl Into<String>, fault: M) {
        self.permanent.insert(op.into(), fault);
    }

    /// Removes transient and permanent faults. The generator keeps its place: only
    /// [`set`](Self::set) reseeds it.
    pub fn clear(&mut self) {
        self.rate = 0.0;
        self.permanent.clear();
    }

    /// The permanent fault of the first of `ops` that has one, without drawing: for
    /// what a simulator does on its own (a controller's apply meets the same
    /// admission refusal a client's does), where no transient fault is drawn.
    pub fn permanent<'o>(&self, ops: impl IntoIterator<Item = &'o str>) -> Option<&M> {
        ops.into_iter().find_map(|op| self.permanent.get(op))
    }

    /// The seeded generator, for whatever else the simulator draws (key material,
    /// which of its transient errors) from the same reproducible stream.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

impl<M: Clone> FaultInjector<M> {
    /// The fault of one call, known by `ops` (the most specific name first): the
    /// permanent fault of the first name that has one, else a transient fault at
    /// the rate, else none.
    ///
    /// A transient fault is `random_bool(rate)` on the generator: one draw when no
    /// permanent fault applies and the rate lies strictly between 0 and 1, none
    /// otherwise, so a seed fails the same calls for as long as it is in use.
    pub fn draw<'o>(&mut self, ops: impl IntoIterator<Item = &'o str>) -> Option<Fault<M>> {
        if let Some(fault) = ops.into_iter().find_map(|op| self.permanent.get(op)) {
            return Some(Fault::Permanent(fault.clone()));
        }
        (self.rate > 0.0 && self.rng.random_bool(self.rate)).then_some(Fault::Transient)
    }
}

/// A permanent fault was asked for on a name that is not one of the simulator's
/// operations, so it could never fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOp {
    op: String,
    known: String,
}

impl fmt::Display for UnknownOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an operation; use one of {}",
            self.op, self.known
        )
    }
}

impl std::error::Error for UnknownOp {}

/// Whether `op` is one of `ops`, a simulator's operation names.
///
/// # Errors
/// [`UnknownOp`], naming the operations there are.
pub fn check_op(ops: &[&str], op: &str) -> Result<(), UnknownOp> {
    if ops.contains(&op) {
        Ok(())
    } else {
        Err(UnknownOp {
            op: op.to_string(),
            known: ops.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(injector: &mut FaultInjector, calls: usize) -> Vec<bool> {
        (0..calls)
            .map(|_| injector.draw(["call"]).is_some())
            .collect()
    }

    fn injector(faults: Faults) -> FaultInjector {
        let mut injector = FaultInjector::default();
        injector.set(faults);
        injector
    }

    #[test]
    fn a_seed_fails_the_calls_random_bool_picks_from_it() {
        // The mocks' seeded tests and the lab's reliability runs were written
        // against exactly this stream: one `random_bool(rate)` per call.
        let mut expected = StdRng::seed_from_u64(42);
        let want: Vec<bool> = (0..200).map(|_| expected.random_bool(0.3)).collect();
        assert_eq!(
            pattern(&mut injector(Faults::transient(42, 0.3)), 200),
            want
        );
    }

    #[test]
    fn the_same_seed_fails_the_same_calls_and_another_seed_others() {
        let a = pattern(&mut injector(Faults::transient(7, 0.3)), 100);
        let b = pattern(&mut injector(Faults::transient(7, 0.3)), 100);
        let c = pattern(&mut injector(Faults::transient(8, 0.3)), 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.contains(&true) && a.contains(&false));
    }

    #[test]
    fn a_rate_fails_about_that_share_of_the_calls() {
        let failed = pattern(&mut injector(Faults::transient(1, 0.1)), 10_000)
            .into_iter()
            .filter(|f| *f)
            .count();
        assert!((800..1200).contains(&failed), "{failed} of 10000 failed");
    }

    #[test]
    fn rate_zero_never_fails_and_never_draws() {
        let mut none = injector(Faults::transient(5, 0.0));
        assert!(!pattern(&mut none, 1000).contains(&true));
        let mut fresh = StdRng::seed_from_u64(5);
        assert_eq!(none.rng().random::<u64>(), fresh.random::<u64>());
    }

    #[test]
    fn rate_one_or_more_always_fails() {
        for rate in [1.0, 7.0] {
            let mut always = injector(Faults::transient(5, rate));
            assert!(!pattern(&mut always, 1000).contains(&false), "rate {rate}");
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_clamped() {
        assert_eq!(Faults::transient(1, 2.0).rate(), 1.0);
        assert_eq!(Faults::transient(1, -0.5).rate(), 0.0);
        assert_eq!(Faults::transient(1, 0.25).rate(), 0.25);
    }

    #[test]
    fn a_permanent_fault_beats_a_transient_one_without_a_draw() {
        let mut faults = injector(Faults::transient(3, 0.5));
        faults.fail_permanently("delete", "permission denied".to_string());
        for _ in 0..20 {
            assert_eq!(
                faults.draw(["delete"]),
                Some(Fault::Permanent("permission denied".to_string()))
            );
        }
        // Other operations still see the seed's stream from its start.
        assert_eq!(
            pattern(&mut faults, 50),
            pattern(&mut injector(Faults::transient(3, 0.5)), 50)
        );
    }

    #[test]
    fn the_first_name_with_a_permanent_fault_wins() {
        let mut faults = FaultInjector::default();
        faults.fail_permanently("apply", "every apply".to_string());
        faults.fail_permanently("apply:ConfigMap", "ConfigMaps".to_string());
        assert_eq!(
            faults.draw(["apply:ConfigMap", "apply"]),
            Some(Fault::Permanent("ConfigMaps".to_string()))
        );
        assert_eq!(
            faults.draw(["apply:Secret", "apply"]),
            Some(Fault::Permanent("every apply".to_string()))
        );
        assert_eq!(faults.draw(["get:Secret", "get"]), None);
    }

    #[test]
    fn clear_removes_transient_and_permanent_faults() {
        let mut faults = injector(Faults::transient(9, 1.0));
        faults.fail_permanently("start", "locked".to_string());
        assert!(faults.draw(["stop"]).is_some());
        faults.clear();
        assert_eq!(faults.draw(["start"]), None);
        assert!(!pattern(&mut faults, 100).contains(&true));
        // Setting faults again reseeds: the stream starts over.
        faults.set(Faults::transient(9, 0.5));
        assert_eq!(
            pattern(&mut faults, 50),
            pattern(&mut injector(Faults::transient(9, 0.5)), 50)
        );
    }

    #[test]
    fn a_run_draws_its_own_stream_and_each_simulator_its_own() {
        // The lab's seeds as they were before they moved here.
        assert_eq!(Faults::for_run(0, 1, 0.1).seed(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(Faults::for_run(7, 3, 0.1).rate(), 0.1);
        assert_ne!(
            Faults::for_run(7, 1, 0.1).seed(),
            Faults::for_run(7, 2, 0.1).seed()
        );
        assert_eq!(Faults::for_run(7, 2, 0.1), Faults::for_run(7, 2, 0.1));
        let run = Faults::for_run(7, 2, 0.1);
        assert_eq!(run.stream(0), run);
        assert_eq!(run.stream(3).seed(), run.seed().wrapping_add(3));
        assert_eq!(run.stream(3).rate(), 0.1);
    }

    #[test]
    fn an_unknown_operation_is_refused_with_the_known_ones() {
        assert_eq!(check_op(&["start", "stop"], "stop"), Ok(()));
        let e = check_op(&["start", "stop"], "reboot").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`reboot` is not an operation; use one of start, stop"
        );
    }
}
