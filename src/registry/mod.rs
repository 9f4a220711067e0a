//! Registries (the OCI distribution spec): references, credentials and authentication, pulling
//! images into layouts, pushing layouts and built images, and registry images as lazy bases.

pub mod auth;
mod body;
pub mod client;
pub mod credentials;
pub mod mirror;
pub mod name;
pub mod pull;
pub mod push;
pub mod source;
pub mod status;
pub mod stream;
mod tls;
mod transfer;
pub mod write;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

pub use client::{Client, Options, Progress};
pub use credentials::Credentials;
pub use name::{RegistryRef, Repository};
pub use source::RemoteBlob;

use crate::error::Result;

/// Runs `f` on every item with at most `jobs` threads; stops handing out work after the first
/// error and returns it.
pub(crate) fn for_each_parallel<T: Sync>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn parallel_visits_every_item_and_returns_the_error() {
        let seen = AtomicUsize::new(0);
        let items: Vec<u32> = (0..50).collect();
        for_each_parallel(4, &items, |_| {
            seen.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 50);
        let r = for_each_parallel(3, &items, |i| match i {
            7 => Err(Error::InvalidDigest(i.to_string())),
            _ => Ok(()),
        });
        assert!(matches!(r, Err(Error::InvalidDigest(d)) if d == "7"));
        for_each_parallel(4, &[] as &[u32], |_| Ok(())).unwrap();
    }
}
