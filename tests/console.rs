//! The operator console in real headless Chromium, on each backend: an API (with an
//! operator key and a plain owner's key) and workers serve 127.0.0.1, and
//! `tests/console/console_test.py` drives the console through chromedriver: submits
//! jobs from the form, sees a poisoned job reach the dead-letter view and redrives it
//! to success, purges with a confirmation, filters the list, shows a 503 as such, and
//! checks that a non-operator sees no operator views or actions and gets 403 from the
//! admin routes. Screenshots of each view at 390 and 1280 px land in
//! `target/console-shots/<backend>/`.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`;
//! `tests/run` installs them; OFFPATH_CHROMIUM and OFFPATH_CHROMEDRIVER point
//! elsewhere) and selenium in .venv (infra/venv.sh).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use offpath_api::{AppState, Auth, Operators, app};
use offpath_testkit::{Backend, Call, Hooked, Hooks, Stack, TestModel, fast_queue};
use offpath_worker::poller::{PollSettings, Pool};

/// The longest the browser script may run on one backend.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

/// Fails the store's listing while `down` is set, as a DynamoDB outage would.
#[derive(Default)]
struct Outage {
    down: AtomicBool,
}

#[async_trait::async_trait]
impl Hooks for Outage {
    async fn before(&self, call: Call) -> Result<(), String> {
        if matches!(call, Call::List) && self.down.load(Ordering::SeqCst) {
            return Err("the job store is unavailable".into());
        }
        Ok(())
    }
}

fn tool(setting: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(setting).unwrap_or_else(|_| default.to_owned()));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (tests/run does), or set {setting}",
        path.display()
    );
    path
}

/// Runs the browser script against `url`, answering its requests to cure or poison
/// the model and to break or mend the store, within [`SCRIPT_LIMIT`].
fn run_script(url: &str, shots: &Path, model: &TestModel, outage: &Outage) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run infra/venv.sh",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root.join("tests/console/console_test.py"))
        .args([
            "--url",
            url,
            "--operator-key",
            "op-key",
            "--user-key",
            "user-key",
        ])
        .arg("--shots")
        .arg(shots)
        .arg("--chromium")
        .arg(tool("OFFPATH_CHROMIUM", "/usr/bin/chromium"))
        .arg("--chromedriver")
        .arg(tool("OFFPATH_CHROMEDRIVER", "/usr/bin/chromedriver"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the browser script starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        while Instant::now() < deadline {
            if child.try_wait().expect("wait").is_some() {
                return child.wait().expect("status");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("the browser script ran past {SCRIPT_LIMIT:?}; killing it (pid {pid})");
        let _ = child.kill();
        child.wait().expect("status")
    });
    for line in stdout.lines().map_while(Result::ok) {
        match line.as_str() {
            "cure" => model.cured.store(true, Ordering::SeqCst),
            "poison" => model.cured.store(false, Ordering::SeqCst),
            "outage" => outage.down.store(true, Ordering::SeqCst),
            "restore" => outage.down.store(false, Ordering::SeqCst),
            _ => {
                eprintln!("console: {line}");
                continue;
            }
        }
        writeln!(stdin, "ok").expect("the script reads its answer");
    }
    let status = watchdog.join().expect("watchdog");
    assert!(
        status.success(),
        "the browser checks failed ({status}); see the log above and {}",
        shots.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_drives_jobs_and_dead_letters_in_a_real_browser() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, fast_queue()).await;
        let model = Arc::new(TestModel::default());
        let worker = stack.worker(model.clone(), Duration::from_millis(100));
        let pollers = Pool::start(
            Arc::new(worker),
            Arc::clone(&stack.ports.queue),
            PollSettings {
                batch_size: 10,
                wait: Duration::from_secs(1),
            },
            2,
        );
        let outage = Arc::new(Outage::default());
        let ports = stack
            .ports
            .with_store(Hooked::store(stack.ports.store.clone(), outage.clone()));
        let auth = Auth::from_api_keys(Some("op-key=ops,user-key=alice")).unwrap();
        let state = AppState::new(&ports, Stack::tasks(), auth)
            .with_operators(Operators::parse(Some("ops"), None).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(axum::serve(listener, app(state)).into_future());

        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("../console-shots")
            .join(backend.name());
        let (model_ref, outage_ref) = (model.clone(), outage.clone());
        tokio::task::spawn_blocking(move || run_script(&url, &shots, &model_ref, &outage_ref))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));

        server.abort();
        pollers.stop().await;
        assert!(
            model.poison_panics.load(Ordering::SeqCst) >= 6,
            "two poisoned jobs, three attempts each"
        );
    }
}
