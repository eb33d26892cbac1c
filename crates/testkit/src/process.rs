//! The real binaries: `offpath` (built by `cargo build`, as `tests/run` does before
//! the tests) and the Lambda bootstraps (built once by `cargo lambda build`, as for a
//! deployment). Tests run these builds; none builds the workspace again.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The directory of the running test binary's profile: `<target>/<profile>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in <target>/<profile>/deps")
        .to_owned()
}

/// The workspace binary `name` of the same build as the running test.
///
/// # Panics
/// When it has not been built: `tests/run` builds it (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins --locked` (tests/run does)",
        path.display()
    );
    path
}

/// The Lambda bootstrap of `function`, as `cargo lambda build --release` wrote it
/// (`<target>/lambda/<function>/bootstrap`).
///
/// # Panics
/// When it has not been built: `tests/run` builds the bootstraps before the tests.
pub fn bootstrap(function: &str) -> PathBuf {
    let target = profile_dir()
        .parent()
        .expect("a profile directory lives in the target directory")
        .to_owned();
    let path = target.join("lambda").join(function).join("bootstrap");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo lambda build --release -p offpath-api -p offpath-worker` (tests/run does)",
        path.display()
    );
    path
}

/// A running `offpath`; killed when dropped.
pub struct Dev {
    child: Child,
    /// Where it serves the API: `http://127.0.0.1:<port>`.
    pub url: String,
    /// What it printed after its address: the curl example.
    pub banner: Vec<String>,
    /// Its log (stderr).
    pub log: PathBuf,
    /// The data directory made for it (see [`Dev::spawn`]), deleted when dropped.
    data_dir: Option<PathBuf>,
}

impl Dev {
    /// Starts `offpath dev --backend aws` on a free loopback port with extra
    /// environment and arguments, and waits for it to print its address.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Dev {
        let mut all = vec!["dev", "--backend", "aws", "--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::spawn(env, &all)
    }

    /// Starts `offpath` with exactly these arguments (none: the default, `offpath
    /// dev`). Its log goes to a file under the system temp directory, named on failure.
    /// Unless `env` names `OFFPATH_DATA_DIR`, its data directory is a new one under the
    /// system temp directory, deleted when it is dropped.
    pub fn spawn(env: &[(&str, &str)], args: &[&str]) -> Dev {
        let id = uuid::Uuid::new_v4();
        let log = std::env::temp_dir().join(format!("offpath-dev-{id}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let data_dir = (!env.iter().any(|(name, _)| *name == "OFFPATH_DATA_DIR"))
            .then(|| std::env::temp_dir().join(format!("offpath-dev-data-{id}")));
        let mut command = Command::new(binary("offpath"));
        if let Some(dir) = &data_dir {
            command.env("OFFPATH_DATA_DIR", dir);
        }
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .expect("offpath starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            while let Some(line) = lines.next() {
                if let Some(url) = line.strip_prefix("offpath listening on ") {
                    let banner: Vec<String> = lines.by_ref().take(4).collect();
                    let _ = tx.send((url.to_owned(), banner));
                }
            }
        });
        let (url, banner) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("offpath did not start in 60 s; log: {}", log.display()));
        Dev {
            child,
            url,
            banner,
            log,
            data_dir,
        }
    }

    /// Kills it with SIGKILL, as a crash would (nothing it holds is handed back), and
    /// reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends Ctrl-C (SIGINT) and waits (at most 30 s) for a clean exit.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("offpath did not exit within 30 s of Ctrl-C");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
