//! Every input the `http` fuzz target ever crashed on (saved under
//! `fuzz/regressions/http/`), and its seed corpus, replayed without the
//! fuzzer against a fresh gateway each.

use std::path::{Path, PathBuf};

use crate::fuzz_input::Driver;

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

#[tokio::test]
async fn saved_crash_inputs_and_seeds_replay_without_breaking_an_invariant() {
    let seeds = inputs("corpus/http");
    assert!(!seeds.is_empty(), "the seed corpus is missing");
    for path in seeds.iter().chain(&inputs("regressions/http")) {
        let data = std::fs::read(path).unwrap();
        let driver = Driver::new();
        let run = tokio::spawn(async move {
            driver.run(&data).await;
            driver.gateway.shutdown().await;
        });
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), run).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{} breaks the gateway: {e}", path.display()),
            Err(_) => panic!("{} hangs the gateway", path.display()),
        }
    }
}
