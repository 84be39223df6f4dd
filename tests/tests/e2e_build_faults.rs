//! Faults around `build` and the cache, end to end on the real tree, rootfs and container:
//! each asserts the exit code, a time bound, the reason named, and that nothing is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::builds::{build, entry_of, unique, Restore, EDITED};
use tests::{code, fixture, run, stderr, stdout};

/// A working state of the fixture tree that is in no cache entry yet: a one-file change
/// (an incremental build of a few files).
fn fresh_change(restore: &mut Restore, tree: &Path) {
    restore.append(
        tree.join(EDITED),
        &format!("\n/* xtask e2e: a fault test, {} */\n", unique()),
    );
}

fn bzimage_of(entry: &str) -> PathBuf {
    Path::new(entry).join("bzImage")
}

/// What publish recorded of the entry's bzImage: (size, sha256).
fn recorded(entry: &str) -> (u64, String) {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(entry).join("metadata.json")).unwrap())
            .unwrap();
    let rec = &meta["files"]["bzImage"];
    (
        rec["size"].as_u64().expect("a recorded size"),
        rec["sha256"]
            .as_str()
            .expect("a recorded digest")
            .to_string(),
    )
}

#[test]
fn a_truncated_or_missing_cached_image_is_rebuilt_not_booted() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    let first = build(&f, &[]);
    assert_eq!(code(&first.out), 0);
    let entry = entry_of(&first);
    let (size, _) = recorded(&entry);
    assert_eq!(std::fs::metadata(bzimage_of(&entry)).unwrap().len(), size);

    // Truncated: `check` builds it again and boots the rebuilt image.
    let half = std::fs::read(bzimage_of(&entry)).unwrap();
    std::fs::write(bzimage_of(&entry), &half[..half.len() / 2]).unwrap();
    let start = Instant::now();
    let out = run(f.xtask().args(["check", "--", "true"]));
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        err.contains(&format!(
            "is broken (bzImage is {} bytes, {size} were recorded): building it again",
            half.len() / 2
        )),
        "{err}"
    );
    assert!(err.contains("verdict: good"), "{err}");
    assert!(took < Duration::from_secs(300), "{took:?}");
    assert_eq!(std::fs::metadata(bzimage_of(&entry)).unwrap().len(), size);

    // Missing: built again too.
    std::fs::remove_file(bzimage_of(&entry)).unwrap();
    let again = build(&f, &[]);
    assert_eq!(code(&again.out), 0);
    let err = stderr(&again.out);
    assert!(err.contains("is broken (bzImage missing)"), "{err}");
    assert!(
        stdout(&again.out).contains("built:"),
        "{}",
        stdout(&again.out)
    );
    assert!(again.took < Duration::from_secs(240), "{:?}", again.took);
    assert_eq!(entry_of(&again), entry);
    assert!(bzimage_of(&entry).is_file());
    // And now it answers from the cache, checked.
    let hit = build(&f, &[]);
    assert!(
        stdout(&hit.out).contains("cache hit"),
        "{}",
        stdout(&hit.out)
    );
    assert_eq!(hit.make_runs(), 0);
    drop(restore);
}
