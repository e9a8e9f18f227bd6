//! The soak run: a steady, paced rate of verified `tools/call` against one
//! endpoint for a long time, with the server's RSS sampled at a fixed period,
//! to show whether memory grows under sustained traffic.
//!
//! Open loop: each worker fires on its own clock (rate ÷ workers per second)
//! whether or not the server keeps up, so a slowing server shows as errors or
//! latency, not as a silently lower rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use crate::http::{Conn, Endpoint};
use crate::load::{open_sessions, verified_call};
use crate::mcp::{CallSpec, Era, Expect};
use crate::process;

#[derive(Debug, Clone)]
pub(crate) struct SoakConfig {
    pub(crate) url: String,
    /// Calls per second, all workers together.
    pub(crate) rate: u64,
    pub(crate) workers: usize,
    pub(crate) duration: Duration,
    pub(crate) sample_every: Duration,
    /// Samples before this are warm-up: growth is measured from the first one after it.
    pub(crate) warmup: Duration,
    pub(crate) pid: u32,
    pub(crate) tool: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) at_secs: u64,
    pub(crate) rss_kib: u64,
    /// Verified calls and failures since the previous sample.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakReport {
    pub(crate) url: String,
    pub(crate) rate: u64,
    pub(crate) workers: usize,
    pub(crate) samples: Vec<Sample>,
    /// RSS at the end minus RSS at the first sample after warm-up, in KiB.
    pub(crate) growth_kib: i64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
}

pub(crate) async fn run(cfg: &SoakConfig) -> Result<SoakReport> {
    if cfg.rate == 0 || cfg.workers == 0 {
        bail!("rate and workers must be at least 1");
    }
    let endpoint = Endpoint::resolve(&cfg.url).await?;
    let sessions = open_sessions(&endpoint, cfg.workers, Era::Legacy).await?;
    let call = CallSpec::new(&cfg.tool, Expect::Echo)?;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + cfg.duration;
    let period = Duration::from_secs_f64(cfg.workers as f64 / cfg.rate as f64);
    let mut workers = Vec::with_capacity(cfg.workers);
    for (w, session) in sessions.into_iter().enumerate() {
        let (endpoint, call, ok, errors) =
            (endpoint.clone(), call.clone(), ok.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut conn: Option<Conn> = None;
            let mut n: u64 = 0;
            while Instant::now() < stop_at {
                tick.tick().await;
                n += 1;
                let id = n * 1000 + w as u64;
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    conn = Conn::open(&endpoint).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match verified_call(c, &endpoint, &session, &call, id, Duration::from_secs(30))
                    .await
                {
                    Ok(true) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut last_ok, mut last_err) = (0, 0);
    let mut tick = tokio::time::interval(cfg.sample_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (o, e) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
        let sample = Sample {
            at_secs: started.elapsed().as_secs(),
            rss_kib: process::rss_kib(cfg.pid)?,
            ok: o - last_ok,
            errors: e - last_err,
        };
        println!(
            "t={:>4}s  rss={:>7} KiB  ok={:>6}  errors={}",
            sample.at_secs, sample.rss_kib, sample.ok, sample.errors
        );
        (last_ok, last_err) = (o, e);
        samples.push(sample);
        if Instant::now() >= stop_at {
            break;
        }
    }
    for w in workers {
        w.await?;
    }
    let after_warmup = samples
        .iter()
        .find(|s| Duration::from_secs(s.at_secs) >= cfg.warmup)
        .or(samples.first())
        .map_or(0, |s| s.rss_kib);
    let end = samples.last().map_or(0, |s| s.rss_kib);
    Ok(SoakReport {
        url: cfg.url.clone(),
        rate: cfg.rate,
        workers: cfg.workers,
        growth_kib: i64::try_from(end).unwrap_or(i64::MAX)
            - i64::try_from(after_warmup).unwrap_or(i64::MAX),
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        samples,
    })
}

/// Prints the report as Markdown (for BENCHMARKS.md).
pub(crate) fn print(r: &SoakReport, warmup: Duration) {
    println!("\n| t (s) | RSS (KiB) | ok | errors |\n| ---: | ---: | ---: | ---: |");
    for s in &r.samples {
        println!(
            "| {} | {} | {} | {} |",
            s.at_secs, s.rss_kib, s.ok, s.errors
        );
    }
    println!(
        "\n{} calls/s target over {} workers: {} ok, {} errors; RSS growth after {}s warm-up: {} KiB",
        r.rate,
        r.workers,
        r.ok,
        r.errors,
        warmup.as_secs(),
        r.growth_kib
    );
}
