//! The closed-loop load driver: C workers, each with one keep-alive connection, call a tool
//! back to back over S sessions for a fixed time, and count only verified echoes.
//!
//! Closed loop (a worker sends its next call when the previous one returns) measures capacity:
//! calls/s at a given concurrency and the latency each call saw. Calls started during the
//! warm-up are made but not recorded, so connection setup, lazy upstream connects and allocator
//! growth do not land in the numbers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::http::{Conn, Endpoint};
use crate::mcp::{self, CallSpec, Era, Failure, Session};
use crate::process;

/// How many connections open (and later close) sessions in parallel: enough to make opening a
/// thousand sessions quick, few enough not to look like a connection flood.
const SESSION_OPENERS: usize = 8;

/// Latency histogram range: 1 µs to 60 s at 3 significant digits (0.1 % resolution).
const HIST_MAX_US: u64 = 60_000_000;

/// What one load run does.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    pub(crate) url: String,
    pub(crate) concurrency: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) sessions: usize,
    /// The tool, its arguments and what counts as its correct answer.
    pub(crate) call: CallSpec,
    /// Legacy sessions (`initialize`) or stateless 2026-07-28 requests.
    pub(crate) era: Era,
    /// An API key sent as `Authorization: Bearer` on every request, for a gateway that
    /// requires credentials.
    pub(crate) bearer: Option<String>,
    /// A call slower than this counts as an error; it bounds a run against a hung server.
    pub(crate) call_timeout: Duration,
    /// The server process to watch (RSS peak, CPU per call), when known.
    pub(crate) pid: Option<u32>,
}

/// Failed calls by kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct ErrorCounts {
    pub(crate) transport: u64,
    pub(crate) timeout: u64,
    pub(crate) http_status: u64,
    pub(crate) protocol: u64,
    pub(crate) rpc_error: u64,
    pub(crate) mismatch: u64,
}

impl ErrorCounts {
    fn add(&mut self, failure: Failure) {
        let slot = match failure {
            Failure::Transport => &mut self.transport,
            Failure::Timeout => &mut self.timeout,
            Failure::HttpStatus(_) => &mut self.http_status,
            Failure::Protocol => &mut self.protocol,
            Failure::RpcError => &mut self.rpc_error,
            Failure::Mismatch => &mut self.mismatch,
        };
        *slot += 1;
    }

    fn merge(&mut self, other: &Self) {
        self.transport += other.transport;
        self.timeout += other.timeout;
        self.http_status += other.http_status;
        self.protocol += other.protocol;
        self.rpc_error += other.rpc_error;
        self.mismatch += other.mismatch;
    }

    /// Returns the number of failed calls of any kind.
    pub(crate) fn total(&self) -> u64 {
        self.transport
            + self.timeout
            + self.http_status
            + self.protocol
            + self.rpc_error
            + self.mismatch
    }
}

/// The outcome of one load run (measured window only).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) url: String,
    pub(crate) concurrency: usize,
    pub(crate) sessions: usize,
    /// From the end of the warm-up to the completion of the last measured call.
    pub(crate) measured_secs: f64,
    /// Calls whose echo was verified.
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) error_kinds: ErrorCounts,
    pub(crate) calls_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
    /// The bench's own CPU use as a share of one core; near 100 % would mean the client, not the
    /// server, set the pace.
    pub(crate) client_cpu_pct: f64,
    /// CPU time of the watched server process per call (ok or not), in µs: a cost figure that
    /// holds up better than calls/s when other jobs share the cores.
    pub(crate) server_cpu_us_per_call: Option<f64>,
    /// Highest RSS of the watched server process seen during the measured window, in KiB.
    pub(crate) server_peak_rss_kib: Option<u64>,
}

/// What each worker hands back.
struct WorkerTally {
    hist: Histogram<u64>,
    ok: u64,
    errors: ErrorCounts,
    /// When the worker's last measured call completed.
    last: Option<Instant>,
}

/// Read-only state shared by all workers.
struct Plan {
    endpoint: Endpoint,
    sessions: Vec<Session>,
    call: CallSpec,
    concurrency: u64,
    measure_from: Instant,
    stop_at: Instant,
    call_timeout: Duration,
}

/// Runs one load run: opens the sessions, drives the workers, closes the sessions.
pub(crate) async fn run(cfg: &LoadConfig) -> Result<LoadReport> {
    if cfg.concurrency == 0 || cfg.sessions == 0 {
        bail!("concurrency and sessions must be at least 1");
    }
    let mut endpoint = Endpoint::resolve(&cfg.url).await?;
    if let Some(key) = &cfg.bearer {
        endpoint = endpoint.with_bearer(key)?;
    }
    let sessions = open_sessions(&endpoint, cfg.sessions, cfg.era).await?;

    let start = Instant::now();
    let plan = Arc::new(Plan {
        endpoint: endpoint.clone(),
        sessions,
        call: cfg.call.clone(),
        concurrency: u64::try_from(cfg.concurrency)?,
        measure_from: start + cfg.warmup,
        stop_at: start + cfg.warmup + cfg.duration,
        call_timeout: cfg.call_timeout,
    });
    let monitor = tokio::spawn(monitor(cfg.pid, plan.measure_from, plan.stop_at));
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|w| tokio::spawn(worker(u64::try_from(w).unwrap_or(0), Arc::clone(&plan))))
        .collect();

    let mut hist = new_histogram()?;
    let mut ok = 0;
    let mut errors = ErrorCounts::default();
    let mut last = plan.measure_from;
    for w in workers {
        let tally = w.await.context("worker panicked")??;
        hist.add(&tally.hist)?;
        ok += tally.ok;
        errors.merge(&tally.errors);
        last = last.max(tally.last.unwrap_or(last));
    }
    let watched = monitor.await.context("monitor panicked")?;
    close_sessions(&endpoint, &plan.sessions).await;

    // A run where every call failed fast still spans the whole window.
    let measured = last
        .duration_since(plan.measure_from)
        .max(plan.stop_at.duration_since(plan.measure_from));
    let secs = measured.as_secs_f64().max(f64::EPSILON);
    let ms = |us: u64| us as f64 / 1000.0;
    let calls = ok + errors.total();
    Ok(LoadReport {
        url: cfg.url.clone(),
        concurrency: cfg.concurrency,
        sessions: cfg.sessions,
        measured_secs: secs,
        ok,
        errors: errors.total(),
        error_kinds: errors,
        calls_per_sec: ok as f64 / secs,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p90_ms: ms(hist.value_at_quantile(0.90)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        mean_ms: hist.mean() / 1000.0,
        client_cpu_pct: watched.client_cpu.as_secs_f64() / secs * 100.0,
        server_cpu_us_per_call: watched
            .server_cpu
            .filter(|_| calls > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / calls as f64),
        server_peak_rss_kib: watched.peak_rss_kib,
    })
}

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_US, 3)?)
}

/// One worker: its own connection, calls back to back until `stop_at`.
async fn worker(index: u64, plan: Arc<Plan>) -> Result<WorkerTally> {
    let mut tally = WorkerTally {
        hist: new_histogram()?,
        ok: 0,
        errors: ErrorCounts::default(),
        last: None,
    };
    let mut conn: Option<Conn> = None;
    let sessions = plan.sessions.len() as u64;
    let mut round: u64 = 0;
    loop {
        let started = Instant::now();
        if started >= plan.stop_at {
            break;
        }
        let measured = started >= plan.measure_from;
        // Ids are unique across workers: several workers share a session, and a server routes
        // responses by id within a session.
        let id = round * plan.concurrency + index;
        let session_index = usize::try_from((index + round) % sessions).unwrap_or(0);
        round += 1;

        let outcome = match conn.as_mut().filter(|c| !c.is_closed()) {
            Some(c) => call(c, &plan, &plan.sessions[session_index], id).await,
            None => match Conn::open(&plan.endpoint).await {
                Ok(c) => {
                    let c = conn.insert(c);
                    call(c, &plan, &plan.sessions[session_index], id).await
                }
                Err(_) => {
                    // Server gone or refusing: do not spin on connect().
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Err(Failure::Transport)
                }
            },
        };
        let done = Instant::now();
        match outcome {
            Ok(reusable) => {
                if measured {
                    let us = u64::try_from(done.duration_since(started).as_micros())
                        .unwrap_or(HIST_MAX_US);
                    tally.hist.saturating_record(us.max(1));
                    tally.ok += 1;
                }
                if !reusable {
                    conn = None;
                }
            }
            Err(failure) => {
                if measured {
                    tally.errors.add(failure);
                }
                // A wrong answer leaves the connection sound; anything else may have left half a
                // response on it, so start over on a new one.
                if !matches!(failure, Failure::RpcError | Failure::Mismatch) {
                    conn = None;
                }
            }
        }
        if measured {
            tally.last = Some(done);
        }
    }
    Ok(tally)
}

/// One verified `tools/call`; `Ok(reusable)` when the echo came back intact.
async fn call(conn: &mut Conn, plan: &Plan, session: &Session, id: u64) -> Result<bool, Failure> {
    verified_call(
        conn,
        &plan.endpoint,
        session,
        &plan.call,
        id,
        plan.call_timeout,
    )
    .await
}

/// Makes the call `spec` once and checks its answer; `Ok(reusable)` says whether the
/// connection can carry the next call.
pub(crate) async fn verified_call(
    conn: &mut Conn,
    endpoint: &Endpoint,
    session: &Session,
    spec: &CallSpec,
    id: u64,
    timeout: Duration,
) -> Result<bool, Failure> {
    let id_json = id.to_string();
    let (req, text) = spec.request(endpoint, session, id);
    let exchange = async {
        let resp = conn.send(req).await.map_err(|_| Failure::Transport)?;
        mcp::read_reply(resp, &id_json).await
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Failure::Timeout)??;
    spec.check(&reply.message, &text)?;
    Ok(reply.reusable)
}

/// Opens `count` sessions over a few parallel connections (none in the stateless era).
pub(crate) async fn open_sessions(
    endpoint: &Endpoint,
    count: usize,
    era: Era,
) -> Result<Vec<Session>> {
    if era == Era::Stateless {
        return Ok(vec![Session::stateless(); count]);
    }
    let openers = SESSION_OPENERS.min(count);
    let tasks: Vec<_> = (0..openers)
        .map(|o| {
            let endpoint = endpoint.clone();
            // Opener o takes sessions o, o + openers, …: shares differ by at most one.
            let share = (o..count).step_by(openers).count();
            tokio::spawn(async move {
                let mut conn = Conn::open(&endpoint).await?;
                let mut opened = Vec::with_capacity(share);
                for _ in 0..share {
                    if conn.is_closed() {
                        conn = Conn::open(&endpoint).await?;
                    }
                    opened.push(mcp::initialize(&mut conn, &endpoint).await?);
                }
                anyhow::Ok(opened)
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(count);
    for task in tasks {
        sessions.extend(task.await.context("session opener panicked")??);
    }
    Ok(sessions)
}

/// Deletes sessions, best effort and bounded in time.
async fn close_sessions(endpoint: &Endpoint, sessions: &[Session]) {
    let work = async {
        let Ok(mut conn) = Conn::open(endpoint).await else {
            return;
        };
        for session in sessions {
            if conn.is_closed() {
                match Conn::open(endpoint).await {
                    Ok(c) => conn = c,
                    Err(_) => return,
                }
            }
            mcp::close(&mut conn, endpoint, session).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
}

/// What [`monitor`] saw during the measured window.
struct Watched {
    client_cpu: Duration,
    server_cpu: Option<Duration>,
    peak_rss_kib: Option<u64>,
}

/// Samples CPU at both ends of the measured window and the server's RSS every 100 ms within it.
async fn monitor(pid: Option<u32>, from: Instant, until: Instant) -> Watched {
    tokio::time::sleep_until(from).await;
    let client_start = process::own_cpu_time();
    let server_start = pid.and_then(|p| process::cpu_time(p).ok());
    let mut peak: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < until {
        tick.tick().await;
        if let Some(rss) = pid.and_then(|p| process::rss_kib(p).ok()) {
            peak = Some(peak.map_or(rss, |p| p.max(rss)));
        }
    }
    let client_cpu = process::own_cpu_time().saturating_sub(client_start);
    let server_cpu = match (pid, server_start) {
        (Some(p), Some(start)) => process::cpu_time(p)
            .ok()
            .map(|end| end.saturating_sub(start)),
        _ => None,
    };
    Watched {
        client_cpu,
        server_cpu,
        peak_rss_kib: peak,
    }
}

/// Prints a report in the plain form `load` uses on a terminal.
pub(crate) fn print(report: &LoadReport) {
    println!(
        "{url}  c={c} sessions={s}  {rate:.0} calls/s  ok={ok} errors={err}  \
         p50={p50:.3}ms p90={p90:.3}ms p99={p99:.3}ms max={max:.3}ms  client-cpu={cpu:.0}%",
        url = report.url,
        c = report.concurrency,
        s = report.sessions,
        rate = report.calls_per_sec,
        ok = report.ok,
        err = report.errors,
        p50 = report.p50_ms,
        p90 = report.p90_ms,
        p99 = report.p99_ms,
        max = report.max_ms,
        cpu = report.client_cpu_pct,
    );
    if report.errors > 0 {
        println!("  errors by kind: {:?}", report.error_kinds);
    }
    if let (Some(cpu), Some(rss)) = (report.server_cpu_us_per_call, report.server_peak_rss_kib) {
        println!("  server: {cpu:.1} µs CPU/call, peak RSS {rss} KiB");
    }
}
