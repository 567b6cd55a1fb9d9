//! The layout is the architecture: the pure folders stay pure.
//!
//! `src/fixture/` and `src/judge/` hold the recorded format and the comparison core. Replay,
//! the benches and the unit tests drive them with no network, so they must never reach for
//! the sidecar (`live`), the broker (`celery`) or an IO runtime (tokio, hyper, redis).

use std::fs;
use std::path::{Path, PathBuf};

const PURE: &[&str] = &["src/fixture", "src/judge"];
const FORBIDDEN: &[&str] = &["tokio", "hyper", "redis::", "crate::live", "crate::celery", "std::net"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn pure_folders_import_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offences = Vec::new();
    for folder in PURE {
        let mut files = Vec::new();
        rust_files(&root.join(folder), &mut files);
        assert!(!files.is_empty(), "{folder} holds no source");
        for file in files {
            let text = fs::read_to_string(&file).expect("readable source");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for word in FORBIDDEN.iter().filter(|word| code.contains(*word)) {
                    offences.push(format!("{}:{}: uses `{word}`", file.display(), number + 1));
                }
            }
        }
    }
    assert!(offences.is_empty(), "pure folders reach for IO:\n{}", offences.join("\n"));
}

#[test]
fn src_lists_the_architecture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut entries: Vec<String> = fs::read_dir(root)
        .expect("src")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["celery", "cli", "config", "fixture", "judge", "lib.rs", "live", "main.rs", "report"],
        "a new top-level entry in src/ belongs in one of the folders"
    );
}
