//! Waiting for a job's end inside a request: `GET /jobs/{id}?wait=N` (long-poll) and
//! `Prefer: wait=N` on `POST /jobs` (RFC 7240). Both wait at most [`MAX_WAIT`], under
//! API Gateway's 30-second limit. The embedded store wakes waiters on the write that
//! ends the job; DynamoDB is polled with consistent reads, 100 ms apart at first, then
//! up to a second apart: at most about 25 reads (half a read unit each) per 20-second
//! wait.

use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;

use crate::ApiError;

/// The longest wait a request may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(20);

/// The query of `GET /jobs/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    /// Seconds to wait for the job to end, 0-20.
    wait: Option<String>,
    /// `input` to include the job's input.
    include: Option<String>,
}

impl WaitQuery {
    /// Whether the answer includes the job's input; anything but `input` is a 400.
    pub(crate) fn include_input(&self) -> Result<bool, ApiError> {
        match self.include.as_deref() {
            None => Ok(false),
            Some("input") => Ok(true),
            Some(_) => Err(ApiError::InvalidRequest(
                "include: the one value is input".into(),
            )),
        }
    }

    /// The wait asked for; a value that is not a whole number from 0 to 20 is a 400.
    pub(crate) fn wait(&self) -> Result<Duration, ApiError> {
        let Some(text) = &self.wait else {
            return Ok(Duration::ZERO);
        };
        text.parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT.as_secs())
            .map(Duration::from_secs)
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "wait: must be a whole number of seconds from 0 to {}",
                    MAX_WAIT.as_secs()
                ))
            })
    }
}

/// The `wait` preference of a `Prefer` header, at most [`MAX_WAIT`]. Preferences that
/// are malformed or unknown are ignored, as RFC 7240 asks.
pub(crate) fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            let (name, value) = preference.split(';').next()?.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let seconds: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(Duration::from_secs(seconds).min(MAX_WAIT))
        })
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("prefer", value.parse().unwrap());
        preferred_wait(&headers)
    }

    #[test]
    fn preferences_and_queries_parse() {
        assert_eq!(prefer("wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(
            prefer("respond-async, wait=3"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(prefer("wait=600"), Some(MAX_WAIT));
        assert_eq!(prefer("wait=soon"), None);
        assert_eq!(prefer("handling=lenient"), None);
        let query = |wait: &str| WaitQuery {
            wait: Some(wait.into()),
            include: None,
        };
        assert_eq!(query("7").wait().unwrap(), Duration::from_secs(7));
        for bad in ["21", "-1", "1.5", "x"] {
            assert_eq!(query(bad).wait().unwrap_err().code(), "invalid_request");
        }
        let include = |value: &str| WaitQuery {
            wait: None,
            include: Some(value.into()),
        };
        assert!(include("input").include_input().unwrap());
        assert!(!query("1").include_input().unwrap());
        assert_eq!(
            include("output").include_input().unwrap_err().code(),
            "invalid_request"
        );
    }
}
