//! A webhook receiver on 127.0.0.1: `tests/fixtures/webhook_receiver.py`, which
//! verifies every delivery with the PyPI `standardwebhooks` library (independent of
//! offpath's signing) and logs it. Its first path segment picks its answer (see the
//! script): `/ok`, `/flaky`, `/down`, `/gone`, `/redirect`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Delivery {
    /// The request path.
    pub path: String,
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: Option<String>,
    /// Signatures in `webhook-signature`.
    pub signatures: usize,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The event's RFC 3339 time.
    pub event_time: Option<String>,
    /// The job's id in the event's data.
    pub job_id: Option<String>,
    /// The job's status in the event's data.
    pub job_status: Option<String>,
    /// The job's progress in the event's data.
    pub progress: Option<serde_json::Value>,
    /// The status the receiver answered.
    pub status: u16,
    /// True when `standardwebhooks` verified the request under one of the secrets.
    pub verified: bool,
    /// Why it did not.
    pub error: Option<String>,
}

/// A running receiver; killed when dropped.
pub struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    /// Starts a receiver that verifies with any of `secrets` (`whsec_...`).
    ///
    /// # Panics
    /// When `.venv` lacks Python or `standardwebhooks` (infra/venv.sh installs them).
    pub fn start(secrets: &[String]) -> Receiver {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let log = std::env::temp_dir().join(format!("{}.jsonl", crate::unique("webhooks")));
        let mut child = Command::new(format!("{root}/.venv/bin/python"))
            .arg(format!("{root}/tests/fixtures/webhook_receiver.py"))
            .arg(&log)
            .args(secrets)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the webhook receiver starts (.venv from infra/venv.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port = line
            .trim()
            .strip_prefix("PORT=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver did not start: {line:?}"));
        Receiver { child, port, log }
    }

    /// The URL of `path` on the receiver (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in order of arrival.
    pub fn deliveries(&self) -> Vec<Delivery> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a receiver log line"))
            .collect()
    }

    /// Waits (up to `within`) until `done` holds for the deliveries; returns them.
    ///
    /// # Panics
    /// When it does not hold in time.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + within;
        loop {
            let deliveries = self.deliveries();
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not get what was expected in {within:?}; it got {deliveries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// From now on `/down` answers 200.
    pub fn bring_up(&self) {
        let mut up = self.log.clone().into_os_string();
        up.push(".up");
        std::fs::write(up, "").expect("the receiver's up file");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
