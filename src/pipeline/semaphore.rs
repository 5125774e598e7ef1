//! A counting semaphore capping the pipelines in flight toward the target, over all writers.
//!
//! The cap bounds what the target has to buffer and what we hold in memory waiting for
//! replies; within it, each writer overlaps sending a pipeline with waiting for the previous.

use parking_lot::{Condvar, Mutex};

pub struct Semaphore {
    permits: Mutex<usize>,
    cv: Condvar,
}

impl Semaphore {
    pub fn new(permits: usize) -> Self {
        Semaphore { permits: Mutex::new(permits.max(1)), cv: Condvar::new() }
    }
    /// Take a permit if one is free now.
    pub fn try_acquire(&self) -> bool {
        let mut p = self.permits.lock();
        if *p > 0 {
            *p -= 1;
            true
        } else {
            false
        }
    }
    /// Wait for a permit.
    pub fn acquire(&self) {
        let mut p = self.permits.lock();
        while *p == 0 {
            self.cv.wait(&mut p);
        }
        *p -= 1;
    }
    pub fn release(&self) {
        *self.permits.lock() += 1;
        self.cv.notify_one();
    }
}
