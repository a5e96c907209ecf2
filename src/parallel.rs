//! Work on a batch of volumes, a few at a time, with results in batch order.
//!
//! Input: items (cases, paths), a number of workers and a function per item. Output: the function's results
//! in item order, or the error of the first failing item in item order.
//!
//! Traps:
//! * The workers are plain threads, not rayon tasks: a rayon thread that waits inside a nested `join` may
//!   start another queued item on top of its stack, so a rayon pool of `w` threads can hold more than `w`
//!   items (and their volumes) at once. Here exactly `workers` items are in flight at most; the parallel
//!   loops *inside* an item (resampling) still run on rayon's global pool, on every core.
//! * Once an item has failed (an error or a panic), items after it that have not started yet are skipped;
//!   items before it all run, so the failure reported is the one a serial loop would have met first,
//!   whatever the scheduling (a panic is raised again on the caller's thread with its own payload). Items
//!   that started while a slow item was failing still finish: the stop is not immediate.
use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::Result;

/// What became of one item.
enum Outcome<T> {
    Done(Result<T>),
    Panicked(Box<dyn Any + Send>),
}

/// Runs `work(i, &items[i])` for every item on `workers` threads (at least one, at most one per item) and
/// returns the results in item order; `done` is called after each item that ran (a progress bar's `inc`).
pub fn map_in_order<I: Sync, T: Send>(
    workers: usize,
    items: &[I],
    done: &(dyn Fn() + Sync),
    work: &(dyn Fn(usize, &I) -> Result<T> + Sync),
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let first_failure = AtomicUsize::new(usize::MAX);
    let outcomes: Mutex<Vec<Option<Outcome<T>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = workers.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() || i > first_failure.load(Ordering::SeqCst) {
                    break;
                }
                let outcome = match catch_unwind(AssertUnwindSafe(|| work(i, &items[i]))) {
                    Ok(r) => Outcome::Done(r),
                    Err(panic) => Outcome::Panicked(panic),
                };
                if !matches!(outcome, Outcome::Done(Ok(_))) {
                    first_failure.fetch_min(i, Ordering::SeqCst);
                }
                // The lock is held only for this store, never while `work` runs: it cannot be poisoned.
                outcomes.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
                done();
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(items.len());
    for outcome in outcomes {
        // Every item before the first failing one ran; the loop leaves at that one.
        match outcome.expect("items before the first failure all ran") {
            Outcome::Done(r) => out.push(r?),
            Outcome::Panicked(panic) => resume_unwind(panic),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::time::Duration;

    #[test]
    fn results_come_in_item_order_with_at_most_workers_in_flight() {
        let items: Vec<usize> = (0..12).collect();
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let ran = AtomicUsize::new(0);
        let out = map_in_order(
            3,
            &items,
            &|| {
                ran.fetch_add(1, Ordering::SeqCst);
            },
            &|i, &v| {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                // Early items take longest, so they finish after later ones.
                std::thread::sleep(Duration::from_millis(2 * (12 - i as u64)));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(v * 10)
            },
        )
        .unwrap();
        assert_eq!(out, (0..12).map(|v| v * 10).collect::<Vec<_>>());
        assert_eq!(ran.load(Ordering::SeqCst), 12);
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} items in flight");
    }

    #[test]
    fn the_first_error_in_item_order_wins_and_later_items_are_skipped() {
        let items: Vec<usize> = (0..40).collect();
        let ran = AtomicUsize::new(0);
        let e = map_in_order(4, &items, &|| {}, &|i, _| {
            ran.fetch_add(1, Ordering::SeqCst);
            match i {
                // Item 9 is later in order but fails first; item 5 sleeps 30 ms before failing.
                5 => {
                    std::thread::sleep(Duration::from_millis(30));
                    Err(Error::Resource("item 5".into()))
                }
                9 => Err(Error::Resource("item 9".into())),
                _ => {
                    std::thread::sleep(Duration::from_millis(5));
                    Ok(i)
                }
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("item 5"), "{e}");
        let ran = ran.load(Ordering::SeqCst);
        assert!(ran < 40, "{ran} items ran after the errors");
    }

    #[test]
    fn a_panicking_item_stops_the_batch_and_its_panic_reaches_the_caller() {
        let items: Vec<usize> = (0..40).collect();
        let ran = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            map_in_order(2, &items, &|| {}, &|i, _| {
                ran.fetch_add(1, Ordering::SeqCst);
                if i == 3 {
                    panic!("item 3 broke");
                }
                std::thread::sleep(Duration::from_millis(5));
                Ok(i)
            })
        }))
        .unwrap_err();
        assert_eq!(caught.downcast_ref::<&str>(), Some(&"item 3 broke"));
        let ran = ran.load(Ordering::SeqCst);
        assert!(ran < 40, "{ran} items ran after the panic");
    }

    #[test]
    fn no_items_no_work() {
        let items: Vec<u8> = Vec::new();
        let out = map_in_order(4, &items, &|| {}, &|_, &v| Ok(v)).unwrap();
        assert!(out.is_empty());
    }
}
