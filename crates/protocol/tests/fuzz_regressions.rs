#![allow(clippy::unwrap_used)]
//! Every input the `jsonrpc` fuzz target ever crashed on (saved under
//! `fuzz/regressions/jsonrpc/`), and its seed corpus, replayed without the
//! fuzzer: a fixed crash stays fixed on machines that never run cargo-fuzz.

#[path = "fuzz/check.rs"]
mod check;

use std::path::{Path, PathBuf};

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

#[test]
fn saved_crash_inputs_and_seeds_decode_without_breaking_an_invariant() {
    let seeds = inputs("corpus/jsonrpc");
    assert!(!seeds.is_empty(), "the seed corpus is missing");
    for path in seeds.iter().chain(&inputs("regressions/jsonrpc")) {
        let data = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| check::check(&data)).is_err() {
            panic!("{} breaks the decoder", path.display());
        }
    }
}

/// Found by the fuzzer: an error's `data` goes through `serde_json::Value`,
/// and without correctly rounded float parsing a relayed number changed in
/// its last digits at every hop.
#[test]
fn numbers_in_error_data_survive_a_relay_unchanged() {
    let upstream = br#"{"jsonrpc":"2.0","id":6,"error":{"code":-32601,"message":"m","data":{"x":327777777777777777777777777777777777777777777777777,"y":0.30000000000000004}}}"#;
    let once = switchboard_protocol::decode_message(upstream)
        .unwrap()
        .encode();
    let twice = switchboard_protocol::decode_message(&once)
        .unwrap()
        .encode();
    assert_eq!(
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice)
    );
    assert!(String::from_utf8_lossy(&once).contains("0.30000000000000004"));
}
