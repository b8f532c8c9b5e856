//! The fuzz targets' shared code: the checks themselves live in `tests/common/` so the
//! integration tests replay every seed and every crash the fuzzers found with exactly the
//! same assertions.

#[path = "../../tests/common/fixtures.rs"]
pub mod fixtures;

#[path = "../../tests/common/differential.rs"]
pub mod differential;

#[path = "../../tests/common/fuzz_checks.rs"]
pub mod checks;
