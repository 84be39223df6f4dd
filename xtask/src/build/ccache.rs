//! ccache for builds: where its cache lives (one per toolchain, in the state dir) and how many
//! of a build's compilations it answered, read from the build's own stats log.

use super::key::sha256_hex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The stats log's name in the build's staging dir (emptied before every build, so the log
/// holds this build's compilations only, whoever else shares the cache).
pub const STATS_LOG: &str = "ccache-stats.log";

/// The ccache directory for `toolchain` (its identity, as in the cache key): a compiler's
/// objects are never mixed with another's, and a new rootfs's toolchain starts its own.
pub fn dir(state_root: &Path, toolchain: &str) -> PathBuf {
    state_root
        .join("ccache")
        .join(&sha256_hex([toolchain.as_bytes()])[..12])
}

/// How many of a build's compilations ccache answered from its cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub hits: u32,
    pub misses: u32,
}

impl Stats {
    /// Reads a `CCACHE_STATSLOG` file: each compilation is a `# FILE` line, then one counter
    /// name a line. A compilation counts as a hit (direct or preprocessed) or a miss; the
    /// uncacheable calls (a link, preprocessing only) count as neither, and so do Kbuild's
    /// probes of the compiler (`cc-option`: the input is /dev/null), which are not the tree's.
    pub fn parse(log: &str) -> Stats {
        let mut s = Stats::default();
        let mut probe = false;
        for line in log.lines().map(str::trim) {
            match line.strip_prefix("# ") {
                Some(file) => probe = file == "/dev/null",
                None if probe => {}
                None => match line {
                    "direct_cache_hit" | "preprocessed_cache_hit" => s.hits += 1,
                    "cache_miss" => s.misses += 1,
                    _ => {}
                },
            }
        }
        s
    }

    /// `hits` as a share of the cacheable compilations, in percent; None when there were none.
    pub fn hit_percent(&self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0).then(|| 100.0 * f64::from(self.hits) / f64::from(all))
    }

    /// `ccache 93% (120 of 129 compilations)`, or `ccache: nothing compiled`.
    pub fn describe(&self) -> String {
        match self.hit_percent() {
            Some(p) => format!(
                "ccache {p:.0}% ({} of {} compilations)",
                self.hits,
                self.hits + self.misses
            ),
            None => "ccache: nothing compiled".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded in the build container (ccache 4.7.5): a miss, then a hit of the same file,
    /// then a call that only links, then two of Kbuild's compiler probes.
    #[test]
    fn a_stats_log_counts_hits_and_misses() {
        let log = "# a.c\ncache_miss\ndirect_cache_miss\nlocal_storage_miss\n\
                   local_storage_read_miss\nlocal_storage_write\npreprocessed_cache_miss\n\
                   # a.c\ndirect_cache_hit\nlocal_storage_hit\nlocal_storage_read_hit\n\
                   # b.c\npreprocessed_cache_hit\ndirect_cache_miss\n\
                   # a.o\ncalled_for_link\n\
                   # /dev/null\ncache_miss\n# /dev/null\ndirect_cache_hit\n";
        let s = Stats::parse(log);
        assert_eq!(s, Stats { hits: 2, misses: 1 });
        assert_eq!(s.describe(), "ccache 67% (2 of 3 compilations)");
        assert_eq!(Stats::parse("").hit_percent(), None);
        assert_eq!(Stats::parse("").describe(), "ccache: nothing compiled");
    }

    #[test]
    fn each_toolchain_has_its_own_dir() {
        let a = dir(Path::new("/s"), "bcd6a5d2b78d; gcc 12.2.0");
        assert!(a.starts_with("/s/ccache"));
        assert_ne!(a, dir(Path::new("/s"), "host: gcc 14"));
        assert_eq!(a, dir(Path::new("/s"), "bcd6a5d2b78d; gcc 12.2.0"));
    }
}
