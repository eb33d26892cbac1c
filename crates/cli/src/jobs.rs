//! `offpath jobs`: the caller's jobs as a table, newest first, from `GET /jobs`.

use clap::Args;
use serde_json::Value;

use crate::client::{Api, authorize, client, send};

/// `offpath jobs` options.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Only jobs with this status.
    #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
    pub status: Option<String>,
    /// Only jobs of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Jobs per page (1-100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Start at this page (the `next` a previous run printed).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the pages to the last one.
    #[arg(long)]
    pub all: bool,
}

/// Prints the pages asked for; the last line names the next page's cursor, if any.
pub async fn run(api: &Api, args: JobsArgs) -> anyhow::Result<()> {
    let client = client()?;
    let mut cursor = args.cursor.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    println!(
        "{}",
        row(["ID", "TASK", "STATUS", "ATTEMPTS", "AGE", "RAN"])
    );
    loop {
        let mut query = vec![("limit", args.limit.to_string())];
        query.extend(args.status.clone().map(|s| ("status", s)));
        query.extend(args.task.clone().map(|t| ("task", t)));
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let request = client.get(format!("{}/jobs", api.url)).query(&query);
        let page = send(authorize(api, request)).await?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            println!("{}", job_row(job, now));
        }
        match page["next_cursor"].as_str() {
            Some(next) if args.all => cursor = Some(next.to_owned()),
            Some(next) => {
                println!("next page: offpath jobs --cursor {next}");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// A job's line: id, task, status, attempts, age, and how long it ran (so far).
fn job_row(job: &Value, now: u64) -> String {
    // The view's times are RFC 3339, in epoch milliseconds here.
    let at = |field: &str| {
        let time = humantime::parse_rfc3339(job[field].as_str()?).ok()?;
        let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(since.as_millis() as u64)
    };
    let created = at("created_at").unwrap_or(now);
    let ran = match (at("started_at"), at("finished_at")) {
        (Some(start), Some(end)) => duration(end.saturating_sub(start)),
        (Some(start), None) => format!("{}…", duration(now.saturating_sub(start))),
        _ => "-".to_owned(),
    };
    let text = |field: &str| job[field].as_str().unwrap_or("-").to_owned();
    row([
        text("id"),
        text("task"),
        text("status"),
        job["attempts"].as_u64().unwrap_or(0).to_string(),
        duration(now.saturating_sub(created)),
        ran,
    ])
}

/// Columns padded to fixed widths (an id is 36 characters).
fn row<S: AsRef<str>>(cells: [S; 6]) -> String {
    let widths = [36, 16, 10, 8, 8, 8];
    let cells: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{:<width$}", cell.as_ref()))
        .collect();
    cells.join("  ").trim_end().to_owned()
}

/// Milliseconds as a short human duration: `850ms`, `12.3s`, `4m`, `2h`, `3d`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_age_and_run_time() {
        // As the API writes a job view.
        let job = serde_json::json!({
            "id": "0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80", "task": "embed", "status": "succeeded",
            "attempts": 1, "created_at": "1970-01-01T00:00:01.000Z",
            "started_at": "1970-01-01T00:00:02.000Z", "finished_at": "1970-01-01T00:00:02.850Z",
        });
        let line = job_row(&job, 181_000);
        assert!(
            line.starts_with("0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80  embed"),
            "{line}"
        );
        assert!(
            line.ends_with("succeeded   1         3m        850ms"),
            "{line}"
        );
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(3 * 86_400_000), "3d");
    }
}
