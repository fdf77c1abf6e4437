//! The fuzz targets' properties on every commit, without cargo-fuzz: each
//! input kept in `fuzz/regressions/<target>/` (every crash a campaign found,
//! once fixed), then a batch of inputs generated from fixed seeds. The
//! harness is the fuzz crate's own code (`fuzz/src`), so what a campaign
//! checks and what this test checks cannot drift apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;

/// The inputs kept for `target`, in name order.
fn kept(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// `count` inputs of up to `len` bytes from a fixed seed (xorshift), so a
/// failure here replays exactly.
fn generated(seed: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let n = (next() as usize) % (len + 1);
            (0..n).map(|_| next() as u8).collect()
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8]), count: usize, len: usize) {
    for (path, input) in kept(target) {
        eprintln!("{target}: {}", path.display());
        run(&input);
    }
    for (i, input) in
        generated(target.bytes().fold(0x5eed_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)), count, len)
            .into_iter()
            .enumerate()
    {
        if std::panic::catch_unwind(|| run(&input)).is_err() {
            let kept = std::env::temp_dir().join(format!("footlight-fuzz-{target}-{i}"));
            std::fs::write(&kept, &input).unwrap();
            panic!(
                "{target}: generated input {i} failed; written to {} (replay with `fuzz/run` or keep it in fuzz/regressions/{target}/)",
                kept.display()
            );
        }
    }
}

#[test]
fn frames_hold_their_properties() {
    replay("frames", harness::frames, 2_000, 2_048);
}

#[test]
fn sessions_hold_their_properties() {
    replay("session", harness::session, 1_000, 2_048);
}

#[test]
fn payloads_hold_their_properties() {
    replay("payload", harness::payload, 2_000, 256);
}

#[test]
fn a_node_holds_its_properties_under_a_hostile_peer() {
    replay("node", harness::node, 40, 1_024);
}
