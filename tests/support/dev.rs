//! Runs the real `offpath dev` binary against the test endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `offpath dev`; killed when dropped.
pub struct Dev {
    child: Child,
    pub url: String,
    /// What it printed after its address: the curl example.
    pub banner: Vec<String>,
}

impl Dev {
    /// Starts `offpath dev --backend aws` with extra environment and arguments, and
    /// waits for it to print its address.
    /// Its log goes to a file under the system temp directory, named on failure.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Dev {
        let mut all = vec!["dev", "--backend", "aws", "--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::spawn(env, &all)
    }

    /// Starts `offpath` with exactly these arguments (no subcommand: the default).
    pub fn spawn(env: &[(&str, &str)], args: &[&str]) -> Dev {
        let log_path =
            std::env::temp_dir().join(format!("offpath-dev-{}.log", uuid::Uuid::new_v4()));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_offpath"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("offpath binary");
        let stdout = child.stdout.take().unwrap();
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
            .unwrap_or_else(|_| {
                panic!(
                    "offpath dev did not start in 60 s; log: {}",
                    log_path.display()
                )
            });
        Dev { child, url, banner }
    }

    /// Sends Ctrl-C (SIGINT) and waits for a clean exit.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("offpath dev did not exit within 30 s of Ctrl-C");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
