//! A loopback TCP proxy in front of the AWS endpoint that a test can switch off, to
//! cut the real adapters off their backend (an outage) and restore it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A proxy on 127.0.0.1 forwarding to an upstream while up.
pub struct Proxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    down: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let down = Arc::new(AtomicBool::new(false));
        let hung = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Notify::new());
        let (flag, hanging, notify) = (down.clone(), hung.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                if hanging.load(Ordering::SeqCst) {
                    // Read and never answer, until cut.
                    let notify = notify.clone();
                    tokio::spawn(async move {
                        let mut sink = tokio::io::sink();
                        tokio::select! {
                            _ = tokio::io::copy(&mut client, &mut sink) => {}
                            _ = notify.notified() => {}
                        }
                    });
                    continue;
                }
                let (upstream, notify) = (upstream.clone(), notify.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = notify.notified() => {}
                    }
                });
            }
        });
        Proxy {
            url,
            down,
            hung,
            cut,
        }
    }

    /// Accepts connections and never answers on them (a hung endpoint); open ones are
    /// cut.
    pub fn hang(&self) {
        self.hung.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Refuses new connections and cuts the open ones.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// Forwards again.
    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
        self.hung.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    /// An AWS configuration whose endpoint is this proxy, with one attempt per call.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }
}
