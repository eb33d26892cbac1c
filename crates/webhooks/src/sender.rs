//! One delivery attempt: a signed POST, bounded in time, following no redirect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{UrlPolicy, WebhookKeys};

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered `410 Gone`: stop sending this job's events.
    Gone,
    /// Anything else (another status, a redirect, a timeout, no connection): try again
    /// later. The text says what happened.
    Failed(String),
    /// The URL is no longer acceptable (its name now resolves to a forbidden address):
    /// nothing was sent, and nothing will be.
    Refused(String),
}

/// Sends signed webhook requests.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: UrlPolicy,
    keys: WebhookKeys,
}

impl Sender {
    /// A sender whose attempts end after `timeout`, for URLs `policy` accepts, signing
    /// with `keys`.
    pub fn new(policy: UrlPolicy, keys: WebhookKeys, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(policy.resolver())
            .user_agent(concat!("offpath-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        Sender {
            client,
            policy,
            keys,
        }
    }

    /// POSTs `body` to `url` for `owner` as event `id`, signed with the owner's
    /// secret(s) and the current time.
    pub async fn send(&self, url: &str, owner: &str, id: &str, body: String) -> Attempt {
        let url = match self.policy.check(url).await {
            Ok(url) => url,
            Err(refused) => return Attempt::Refused(refused.to_string()),
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = self.keys.signature(owner, id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) if response.status() == reqwest::StatusCode::GONE => Attempt::Gone,
            Ok(response) => Attempt::Failed(format!("the receiver answered {}", response.status())),
            Err(err) => Attempt::Failed(describe(&err)),
        }
    }
}

/// An HTTP error with its causes, in one line.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
