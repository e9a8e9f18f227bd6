//! A tiny in-process HTTP server on 127.0.0.1:0 whose answers tests set and
//! whose hits they count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::net::TcpListener;

/// Serves `router` on loopback until the test ends.
pub(crate) async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A body the test can swap, and a hit counter.
#[derive(Clone, Default)]
pub(crate) struct Doc {
    pub(crate) body: Arc<Mutex<String>>,
    pub(crate) hits: Arc<AtomicUsize>,
}

impl Doc {
    pub(crate) fn new(body: impl Into<String>) -> Self {
        let d = Doc::default();
        d.set(body);
        d
    }
    pub(crate) fn set(&self, body: impl Into<String>) {
        *self.body.lock().unwrap() = body.into();
    }
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub(crate) fn get(&self) -> String {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.body.lock().unwrap().clone()
    }
}
