//! The unit tests' recorded transcripts: a file under a module's `test_data/` folder, read
//! without its `# recorded: …` header line (which names the trigger and the config).

use std::path::Path;

/// `src/<folder>/<path>` without its header line: line numbers are those of the run's own log.
pub fn recorded(folder: &str, path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(folder)
        .join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    match text.strip_prefix("# recorded:") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, r)| r).to_string(),
        None => text,
    }
}
