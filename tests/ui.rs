//! Compile errors for misuse of the derives and of `tell`/`ask`, pinned as
//! snapshots (`tests/ui/*.stderr`). Regenerate with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
