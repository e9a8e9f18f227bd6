//! Bounded HTTP for the few documents this crate fetches (key sets,
//! metadata, token answers): no redirects, a timeout on every request, and
//! a size cap enforced while reading.

use std::time::Duration;

use reqwest::{Client, Response};
use url::Url;

use crate::error::SettingsError;

/// Limits for one kind of fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The whole request, connect to last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The largest body read; a larger one is an error, never truncated.
    pub max_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_bytes: 64 * 1024,
        }
    }
}

/// Builds the client. Redirects are not followed: a token request carries
/// client credentials, and a key set or metadata document that moved is a
/// setting to fix, not a hop to take silently.
pub(crate) fn client(limits: &FetchLimits) -> Result<Client, SettingsError> {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(limits.timeout)
        .connect_timeout(limits.connect_timeout)
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SettingsError::new("http client", describe(&e)))
}

/// Refuses plain `http` except to a loopback host (key sets and tokens
/// fetched in the clear could be swapped on the way) and URLs with
/// credentials.
pub(crate) fn require_secure(url: &Url, field: &'static str) -> Result<(), SettingsError> {
    // Credentials in a URL end up in every message that names it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SettingsError::new(
            field,
            "carries credentials in the url; configure them as client credentials instead",
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(SettingsError::new(
            field,
            format!("{url} uses plain http; use https (http is accepted only for loopback hosts)"),
        )),
        other => Err(SettingsError::new(
            field,
            format!("{url} has scheme {other:?}; use https"),
        )),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why a fetch failed, already phrased for an error message.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// Connect, TLS, timeout or read failure.
    Transport(String),
    /// A non-success status; the body is kept (bounded) for OAuth errors.
    Status(u16, Vec<u8>),
    TooLarge(usize),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Transport(e) => f.write_str(e),
            FetchError::Status(s, _) => write!(f, "answered http {s}"),
            FetchError::TooLarge(max) => write!(f, "answer is larger than {max} bytes"),
        }
    }
}

/// Sends `request` and reads the body with the size cap.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let response = request
        .send()
        .await
        .map_err(|e| FetchError::Transport(describe(&e)))?;
    let status = response.status();
    let body = read_limited(response, max_bytes).await?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(FetchError::Status(status.as_u16(), body))
    }
}

async fn read_limited(mut response: Response, max: usize) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Transport(describe(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Joins an error's causes (reqwest's own message says only "error sending
/// request"), without the URL, which the caller names itself.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        String::new()
    };
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.starts_with("error sending request") && !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
        source = s.source();
    }
    if msg.is_empty() {
        "request failed".to_owned()
    } else {
        msg
    }
}
