//! Giving memory back when SSE clients leave. Each connection's buffers
//! (hyper keeps 16 KB per HTTP/1 connection) are freed when it closes, but
//! glibc's allocator keeps freed pages in its arenas: after 10,000 clients
//! left, the gateway stayed at 190 MB. When the number of followers has
//! fallen well below its peak, the hub asks the allocator to return its free
//! pages (`malloc_trim`), once per such drop.

/// Followers that must have left since the peak before memory is given back.
const LEFT_AT_LEAST: usize = 256;

/// When to give memory back: after the followers fell to half their peak
/// or less, by at least [`LEFT_AT_LEAST`].
#[derive(Debug, Default)]
pub struct Release {
    peak: usize,
}

impl Release {
    /// Takes the current number of followers; true when memory should be
    /// given back now (and the peak starts again from `now`).
    pub fn observe(&mut self, now: usize) -> bool {
        self.peak = self.peak.max(now);
        let left = self.peak - now;
        if left >= LEFT_AT_LEAST && now <= self.peak / 2 {
            self.peak = now;
            return true;
        }
        false
    }
}

/// Asks the allocator to return every free page of every arena to the
/// system; whether it gave any back. Elsewhere than glibc it does nothing:
/// other allocators return memory themselves or have no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only the
    // allocator's own free lists, under the allocator's own locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_once_per_large_drop() {
        let mut release = Release::default();
        // A few clients coming and going: never.
        for n in [0, 10, 200, 3, 255, 0] {
            assert!(!release.observe(n), "{n}");
        }
        // 10,000 came; 9,000 of them left: once.
        assert!(!release.observe(10_000));
        assert!(!release.observe(6_000));
        assert!(release.observe(1_000));
        assert!(!release.observe(900));
        assert!(release.observe(0), "the last 1,000 left too");
        assert!(!release.observe(0), "nothing left since: not again");
        // Half of a large peak left while the other half stays.
        assert!(!release.observe(4_000));
        assert!(release.observe(2_000));
    }
}
