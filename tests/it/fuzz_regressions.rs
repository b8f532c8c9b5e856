//! Replays through the fuzz targets' own checks (`tests/common/fuzz_checks.rs`): every
//! input a fuzzer ever crashed on (`tests/data/fuzz-crashes/<target>/`, kept forever) and
//! the fuzzers' seed inputs (`fuzz/seeds/<target>/`), so `cargo test` guards what fuzzing
//! found without needing cargo-fuzz or nightly.

use std::path::Path;

use crate::fuzz_checks::{self, repo_root};

/// Runs `check` on every file in `dir`; returns how many there were.
fn replay(dir: &Path, check: Check) -> usize {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails its check again", f.display());
    }
    files.len()
}

/// A fuzz target's check: panics on a bad input.
type Check = fn(&[u8]);

fn targets() -> [(&'static str, Check); 4] {
    [
        ("packet", fuzz_checks::packet),
        ("config", fuzz_checks::config),
        ("differential", fuzz_checks::differential),
        ("fleet", fuzz_checks::fleet),
    ]
}

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    let root = repo_root();
    let mut total = 0;
    for (target, check) in targets() {
        total += replay(&root.join("tests/data/fuzz-crashes").join(target), check);
    }
    eprintln!("{total} former crashes replayed");
    assert!(total >= 1, "the crash directory lost its files");
}

#[test]
fn fuzz_seeds_pass_the_checks() {
    let root = repo_root();
    for (target, check) in targets() {
        let n = replay(&root.join("fuzz/seeds").join(target), check);
        assert!(n >= 5, "fuzz/seeds/{target} has only {n} seeds");
    }
}
