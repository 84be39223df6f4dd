//! `cargo xtask cache ls | show | gc`: the build cache's entries listed, shown and dropped
//! least recently used first (the store itself: `crate::build::cache`).

use crate::build::cache::{Cache, Entry, Status};
use crate::ctx::Ctx;
use crate::units::{human_bytes, human_duration, short, Bound};
use anyhow::{bail, Context, Result};
use std::time::{Duration, SystemTime};

/// The keys `gc` drops: least recently used first, until the rest fits in `max` bytes.
/// Input: (key, last used, size).
pub fn gc_victims(entries: &[(String, SystemTime, u64)], max: u64) -> Vec<String> {
    let mut by_age: Vec<&(String, SystemTime, u64)> = entries.iter().collect();
    by_age.sort_by_key(|(k, t, _)| (*t, k.clone()));
    let mut total: u64 = entries.iter().map(|e| e.2).sum();
    let mut out = Vec::new();
    for (key, _, size) in by_age {
        if total <= max {
            break;
        }
        total -= size;
        out.push(key.clone());
    }
    out
}

fn age(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    if d.as_secs() == 0 {
        return "just now".into();
    }
    format!("{} ago", human_duration(Duration::from_secs(d.as_secs())))
}

/// The largest `gc --max-size`: beyond any disk, well inside 64 bits of bytes.
pub const MAX_SIZE: Bound<'static, u64> = (1 << 50, "1024T");

pub fn ls(cache: &Cache) -> Result<u8> {
    let mut entries = Vec::new();
    let mut corrupt = Vec::new();
    for (name, entry) in cache.scan()? {
        match entry.and_then(|e| e.verify().map(|()| e)) {
            Ok(e) => entries.push(e),
            Err(why) => corrupt.push((name, why)),
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.meta.created));
    if entries.is_empty() && corrupt.is_empty() {
        println!("the cache is empty");
        return Ok(0);
    }
    println!(
        "{:<12}  {:<6}  {:<6}  {:<13}  {:>9}  {:>10}  last used",
        "KEY", "STATUS", "ARCH", "COMMIT", "SIZE", "CONFIG"
    );
    let mut total = 0;
    for e in &entries {
        let size = e.size();
        total += size;
        let status = match e.meta.status {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
        };
        let commit = format!(
            "{}{}",
            short(&e.meta.commit),
            if e.meta.dirty { "+" } else { "" }
        );
        // The key names the architecture (entries from before it did: `?`).
        let arch = Some(e.meta.inputs.arch.as_str())
            .filter(|a| !a.is_empty())
            .unwrap_or("?");
        println!(
            "{:<12}  {:<6}  {:<6}  {:<13}  {:>9}  {:>10}  {}",
            short(&e.meta.key),
            status,
            arch,
            commit,
            human_bytes(size),
            e.meta
                .inputs
                .config
                .get(..8)
                .unwrap_or(&e.meta.inputs.config),
            age(e.last_used())
        );
    }
    for (name, why) in &corrupt {
        println!("{:<12}  {:<6}  {why}", short(name), "CORRUPT");
    }
    println!(
        "{} entries, {} (a commit with + had uncommitted changes)",
        entries.len(),
        human_bytes(total)
    );
    if !corrupt.is_empty() {
        println!(
            "{} corrupt: a build of their key makes them again; `cargo xtask cache gc` removes them",
            corrupt.len()
        );
    }
    Ok(0)
}

pub fn show(ctx: &Ctx, cache: &Cache, what: &str) -> Result<u8> {
    let entries = cache.entries()?;
    let mut found: Vec<&Entry> = if what.len() >= 4 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        entries
            .iter()
            .filter(|e| e.meta.key.starts_with(what))
            .collect()
    } else {
        Vec::new()
    };
    if found.is_empty() {
        let tree = ctx.require_tree()?;
        let src = crate::build::source::resolve(&ctx.state, &tree, Some(what))
            .with_context(|| format!("{what} is neither a cache key nor a revision"))?;
        found = entries
            .iter()
            .filter(|e| e.meta.inputs.tree_id == src.tree_id && e.meta.inputs.dirty.is_none())
            .collect();
    }
    if found.is_empty() {
        bail!("no cache entry for {what}: build it with `cargo xtask build {what}`");
    }
    for e in found {
        println!("{}", e.dir.display());
        println!("{}", serde_json::to_string_pretty(&e.meta)?);
        println!(
            "last used {}, {}",
            age(e.last_used()),
            human_bytes(e.size())
        );
    }
    Ok(0)
}

pub fn gc(cache: &Cache, max: u64) -> Result<u8> {
    for (name, why) in cache.sweep(true) {
        println!("removed {} ({why})", short(&name));
    }
    let entries = cache.entries()?;
    let list: Vec<(String, SystemTime, u64)> = entries
        .iter()
        .map(|e| (e.meta.key.clone(), e.last_used(), e.size()))
        .collect();
    let before: u64 = list.iter().map(|e| e.2).sum();
    let mut freed = 0;
    let mut dropped = 0;
    for key in gc_victims(&list, max) {
        let size = list.iter().find(|e| e.0 == key).map_or(0, |e| e.2);
        if cache.remove(&key)? {
            println!("dropped {} ({})", short(&key), human_bytes(size));
            freed += size;
            dropped += 1;
        } else {
            println!("kept {}: a build holds it", short(&key));
        }
    }
    println!(
        "dropped {dropped} entries, {}; the cache holds {}",
        human_bytes(freed),
        human_bytes(before - freed)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn gc_drops_least_recently_used_until_it_fits() {
        let e = vec![
            ("new".to_string(), t(300), 10),
            ("old".to_string(), t(100), 10),
            ("mid".to_string(), t(200), 10),
        ];
        assert_eq!(gc_victims(&e, 30), Vec::<String>::new());
        assert_eq!(gc_victims(&e, 25), ["old"]);
        assert_eq!(gc_victims(&e, 10), ["old", "mid"]);
        assert_eq!(gc_victims(&e, 0), ["old", "mid", "new"]);
    }
}
