//! Parallel loops for small passes without a thread hand-off per loop.
//!
//! A one-sentence pass runs about thirty parallel loops (products, attention) of a few
//! microseconds each. On rayon alone, each loop wakes a parked thread and the caller
//! parks again after it: about 30 context switches a sentence, and the second core
//! idles between loops. A [`Team`] instead keeps the pool's other threads for the
//! whole pass: they spin until the pass's thread publishes a loop, take its units from
//! a shared counter alongside it, and wait for the next. [`for_each`] runs a loop on
//! the calling thread's team when it leads one, on rayon otherwise.
//!
//! A helper that starts late (its thread was busy) joins at whatever loop is running;
//! one that never starts costs nothing, because the leader takes every unit no helper
//! took. So a team cannot deadlock, whatever else the pool is doing; it only spins,
//! for the length of one short pass.

// A loop's work is published as a raw pointer to the leader's closure, which outlives
// every use (the leader waits until each unit it published has finished).
#![allow(unsafe_code)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;

/// A loop's work: called once for each unit.
type Work<'a> = &'a (dyn Fn(usize) + Sync);

/// Bits of [`Team::state`] for a loop's units and for the next unit to take.
const UNIT_BITS: u32 = 24;
/// Most units one loop of a team may have.
const MAX_UNITS: usize = (1 << UNIT_BITS) - 1;
/// Spins between two yields while a helper waits for a loop: to other rayon work if
/// there is some, else to the operating system, so that on a busy machine a helper
/// does not hold the core its leader waits for.
const SPINS_PER_YIELD: u32 = 64;

thread_local! {
    /// The team the current thread leads, if any.
    static LED: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

/// The threads running one pass.
pub(crate) struct Team {
    /// The published loop, in one word so that a helper reads it whole: its
    /// generation (the bits above `2 * UNIT_BITS`), its unit count and the next
    /// unit to take ([`UNIT_BITS`] each). A unit is taken by advancing the word.
    state: AtomicU64,
    /// The published loop's work: a pointer to a [`Work`].
    work: AtomicPtr<()>,
    /// Units of the published loop that have finished.
    done: AtomicUsize,
    /// Set when a unit panicked; the leader panics after the loop.
    panicked: AtomicBool,
    /// Set when the pass has ended: helpers leave.
    finished: AtomicBool,
}

impl Team {
    fn new() -> Self {
        Team {
            state: AtomicU64::new(0),
            work: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }
    }

    /// Publishes a loop of `units` and takes part in it until every unit has finished.
    fn run(&self, units: usize, work: Work) {
        let generation = (self.state.load(Ordering::Relaxed) >> (2 * UNIT_BITS)) + 1;
        self.work
            .store(&work as *const Work as *mut (), Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.state.store(
            generation << (2 * UNIT_BITS) | (units as u64) << UNIT_BITS,
            Ordering::Release,
        );
        self.take_units();
        while self.done.load(Ordering::Acquire) < units {
            std::hint::spin_loop();
        }
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a unit of a parallel loop panicked");
        }
    }

    /// Takes and runs units of the published loop until none is left; returns whether
    /// it ran any.
    fn take_units(&self) -> bool {
        let mut ran = false;
        loop {
            let state = self.state.load(Ordering::Acquire);
            let mask = (1 << UNIT_BITS) - 1;
            let (units, next) = ((state >> UNIT_BITS) & mask, state & mask);
            if next >= units {
                return ran;
            }
            // Read before the claim: a successful claim proves the loop was still open,
            // so this is its work (the leader publishes the next only after every unit
            // of this one has finished).
            let work = self.work.load(Ordering::Relaxed);
            if self
                .state
                .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: `work` points at the leader's `Work` of this loop, which lives
            // until `done` reaches the loop's units, after this unit's increment.
            let work = unsafe { *work.cast::<Work>() };
            if catch_unwind(AssertUnwindSafe(|| work(next as usize))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
            ran = true;
        }
    }

    /// A helper's part: takes units of each loop until the pass ends; between loops,
    /// spins, now and then yielding ([`SPINS_PER_YIELD`]).
    fn help(&self) {
        let mut idle = 0u32;
        while !self.finished.load(Ordering::Acquire) {
            if self.take_units() {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle.is_multiple_of(SPINS_PER_YIELD) {
                if rayon::yield_now() != Some(rayon::Yield::Executed) {
                    std::thread::yield_now();
                }
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `pass` on the calling thread with the other `threads - 1` of rayon's pool as
/// its team: each [`for_each`] inside it (on this thread) shares its units with them.
/// Call it from inside the pool.
pub(crate) fn lead<T: Send>(threads: usize, pass: impl FnOnce() -> T + Send) -> T {
    let team = Team::new();
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| team.help());
        }
        struct Leading<'a>(&'a Team, *const Team);
        impl Drop for Leading<'_> {
            fn drop(&mut self) {
                LED.set(self.1);
                self.0.finished.store(true, Ordering::Release);
            }
        }
        let _leading = Leading(&team, LED.replace(&team));
        pass()
    })
}

/// Runs `work` for units `0..units`: on the team the calling thread leads, or on
/// rayon's threads.
pub(crate) fn for_each(units: usize, work: impl Fn(usize) + Sync + Send) {
    let team = LED.get();
    if team.is_null() || units > MAX_UNITS {
        (0..units).into_par_iter().for_each(work);
        return;
    }
    // Units run with no team led, so a loop inside one falls back to rayon.
    LED.set(std::ptr::null());
    // SAFETY: `lead` set the pointer to its team, which lives until `lead` returns and
    // resets it; this call runs inside that.
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { &*team }.run(units, &work)));
    LED.set(team);
    if let Err(panic) = result {
        resume_unwind(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_runs_every_unit_of_every_loop_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let counts: Vec<AtomicUsize> = (0..500).map(|_| AtomicUsize::new(0)).collect();
        pool.install(|| {
            lead(3, || {
                for units in [1, 7, 500, 0, 64] {
                    for_each(units, |unit| {
                        counts[unit].fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        });
        let counts: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        // Unit 0 is in four loops, 1-6 in three, 7-63 in two, 64-499 in one.
        assert_eq!(counts[0], 4);
        assert!(counts[1..7].iter().all(|&c| c == 3), "{counts:?}");
        assert!(counts[7..64].iter().all(|&c| c == 2), "{counts:?}");
        assert!(counts[64..].iter().all(|&c| c == 1), "{counts:?}");
    }

    #[test]
    fn a_team_whose_helpers_cannot_start_still_finishes() {
        // One thread in the pool: the helpers wait behind the leader, which does it all.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let total = AtomicUsize::new(0);
        pool.install(|| {
            lead(4, || {
                for_each(100, |unit| {
                    total.fetch_add(unit, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn a_unit_that_panics_panics_the_leader_and_the_team_ends() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let result = pool.install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                lead(2, || {
                    for_each(10, |unit| assert_ne!(unit, 7, "unit 7 fails"));
                })
            }))
        });
        assert!(result.is_err());
        // The pool is free again: the helper left.
        assert_eq!(pool.install(|| 1 + 1), 2);
    }
}
