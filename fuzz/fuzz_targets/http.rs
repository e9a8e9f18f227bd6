//! The gateway's HTTP face on arbitrary requests (method, path, headers,
//! body; format in `fuzz_input.rs`), through the same router the server
//! runs, without a socket. One gateway and one runtime per process.
#![no_main]

#[path = "../../crates/gateway/tests/it/fuzz_input.rs"]
mod fuzz_input;

use std::sync::OnceLock;

struct Harness {
    runtime: tokio::runtime::Runtime,
    driver: fuzz_input::Driver,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let driver = {
            let _entered = runtime.enter();
            fuzz_input::Driver::new()
        };
        Harness { runtime, driver }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.runtime.block_on(h.driver.run(data));
});
