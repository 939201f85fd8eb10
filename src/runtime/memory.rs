//! Giving the heap back to the OS when load drops, and the process's resident memory.
//!
//! glibc's malloc keeps what a thread freed in that thread's arena for reuse: after a busy
//! hour or a spike, the memory of calls long gone stays resident (RSS at its peak) though
//! holdfast holds none of it. Does: watch the calls and SIP transactions in progress
//! ([`in_progress`]; [`Trim::note`] after each round of the main loop, [`Trim::observe`]
//! every [`CHECK_INTERVAL`]) and, once they fell to half of their peak since the last trim
//! (or to none), return the arenas' free pages with `malloc_trim(0)` ([`trim_heap`], run off the
//! main loop); read the resident set size ([`resident_bytes`], `/proc/self/statm`) for
//! `process_resident_memory_bytes` and the trim's log line.
//!
//! Never: trims while load is steady or growing (freed memory is reused then, and a trim
//! would only make the allocator ask for it again), on the call path, or on other C
//! libraries (`malloc_trim` is glibc's; elsewhere [`trim_heap`] does nothing).
use std::time::Duration;

/// How often the main loop looks at the calls and transactions in progress.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// What the trim policy counts: calls and SIP transactions in progress. Transactions count
/// because an ended call's last ones live on for up to 64×T1 (32 s) and hold memory of
/// their own: a trim only when the calls reach none would miss what they free.
pub fn in_progress(stats: &crate::b2bua::Stats) -> usize {
    stats.calls_active + stats.transactions
}

/// When to trim: the work in progress ([`in_progress`]) against its peak since the last
/// trim.
#[derive(Debug, Default)]
pub struct Trim {
    /// The most calls seen in progress since the last trim.
    peak: usize,
}

impl Trim {
    /// Takes the work in progress between checks (the main loop, after each round of
    /// work), so that a burst shorter than [`CHECK_INTERVAL`] counts too.
    pub fn note(&mut self, calls_active: usize) {
        self.peak = self.peak.max(calls_active);
    }

    /// The check: takes the work in progress now; true when the heap should be trimmed:
    /// they fell to half of their peak since the last trim or less (to none after a single
    /// call).
    pub fn observe(&mut self, calls_active: usize) -> bool {
        self.note(calls_active);
        if self.peak > 0 && calls_active <= self.peak / 2 {
            self.peak = calls_active;
            return true;
        }
        false
    }
}

/// Returns the free memory of every malloc arena to the OS (glibc `malloc_trim(0)`:
/// the top of each heap and, since glibc 2.8, the free pages inside it). Blocks for about
/// a millisecond per few hundred megabytes of heap; call it from a blocking thread.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own arenas, under their
    // locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident set size, from `/proc/self/statm` (None where there is no /proc).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_load_fell_to_half_its_peak_and_not_while_steady() {
        let mut t = Trim::default();
        assert!(!t.observe(0), "nothing happened yet");
        for calls in [10, 200, 240, 238, 241, 180, 121] {
            assert!(
                !t.observe(calls),
                "{calls} calls: steady or above half of 241"
            );
        }
        assert!(t.observe(120), "half of the peak");
        // The peak starts again from there: another trim only after another halving.
        assert!(!t.observe(100) && !t.observe(61));
        assert!(t.observe(60));
        assert!(!t.observe(60), "no load change, no trim");
        assert!(t.observe(0), "all calls gone");
        assert!(!t.observe(0), "idle: trimmed already");
        assert!(!t.observe(1));
        assert!(t.observe(0), "the one call ended");
        // A burst between two checks.
        t.note(30);
        t.note(12);
        assert!(t.observe(0), "a burst the checks did not see");
    }

    #[test]
    fn resident_memory_is_read_and_trimming_gives_a_freed_spike_back() {
        let before = resident_bytes().expect("/proc/self/statm");
        assert!(before > 0);
        // 64 MiB in small blocks (below the mmap threshold, so they come from an arena),
        // touched, then freed under a block still in use (so that free() cannot give the
        // top of the heap back by itself): glibc keeps them until the trim.
        let blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![1u8; 4096]).collect();
        let pin = vec![1u8; 4096];
        let peak = resident_bytes().unwrap();
        drop(blocks);
        let freed = resident_bytes().unwrap();
        trim_heap();
        let after = resident_bytes().unwrap();
        drop(pin);
        assert!(
            peak >= before + (48 << 20),
            "the blocks were resident: {before} → {peak}"
        );
        assert!(
            freed + (32 << 20) > peak,
            "free() kept them: {peak} → {freed}"
        );
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                after + (32 << 20) < peak,
                "trimmed: {peak} → {after} bytes resident"
            );
        }
    }
}
