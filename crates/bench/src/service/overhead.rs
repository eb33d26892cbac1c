//! Submit overhead: offpath's submit (the router, as Lambda invokes it: no TCP)
//! against the floor, one bare write and one bare send (the SDK's PutItem +
//! SendMessage on aws; the embedded store's create + the queue's send on embedded).
//! Interleaved, so drift hits both sides alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{self, StatusCode};
use offpath_api::{AppState, Auth, app};
use offpath_core::queue::message_group;
use offpath_core::{Job, JobMessage, Ports};
use offpath_testkit::{Stack, new_job};
use serde::Serialize;
use serde_json::json;
use tower::ServiceExt as _;

use super::{Bench, LIGHT_TEXT};
use crate::{Percentiles, dp2};

/// offpath's submit against the floor.
#[derive(Debug, Serialize)]
pub(super) struct Overhead {
    submits: usize,
    /// offpath's submit latency.
    pub(super) offpath: Percentiles,
    floor: Percentiles,
    floor_is: &'static str,
    #[serde(serialize_with = "dp2")]
    p50_ratio: f64,
}

/// Times `submits` offpath submits and as many floor submits, interleaved.
pub(super) async fn measure(bench: &Bench) -> anyhow::Result<Overhead> {
    let stack = bench.stack("overhead").await;
    let state = AppState::new(&stack.ports, Arc::clone(&bench.tasks), Auth::SingleTenant);
    let router = app(state);
    let body = json!({"task": "embed", "input": {"texts": [LIGHT_TEXT]}}).to_string();
    let floor_path = Floor::new(&stack).await;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    let warm_up = 20;
    for i in 0..bench.options.submits + warm_up {
        let start = Instant::now();
        let request = http::Request::post("/jobs")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))?;
        let response = router.clone().oneshot(request).await?;
        anyhow::ensure!(
            response.status() == StatusCode::ACCEPTED,
            "submit answered {}",
            response.status()
        );
        let took_ours = start.elapsed();

        let start = Instant::now();
        floor_path.submit().await?;
        let took_floor = start.elapsed();
        if i >= warm_up {
            ours.push(took_ours);
            floor.push(took_floor);
        }
    }
    let ours = Percentiles::of(&ours).context("no submits")?;
    let floor = Percentiles::of(&floor).context("no submits")?;
    let ratio = ours.p50 / floor.p50;
    println!(
        "p50: offpath {:.3} ms, floor {:.3} ms -> {ratio:.2}x (target <= 1.1); p99 {:.3} vs {:.3} ms",
        ours.p50, floor.p50, ours.p99, floor.p99
    );
    Ok(Overhead {
        submits: bench.options.submits,
        offpath: ours,
        floor,
        floor_is: floor_path.describe(),
        p50_ratio: ratio,
    })
}

/// The floor of a submit: one bare write and one bare send, the SDK's PutItem +
/// SendMessage on aws, the embedded store's create + the queue's send on embedded.
pub(super) struct Floor {
    ports: Ports,
    sdk: Option<Sdk>,
}

/// The bare SDK clients and the resources they write to.
struct Sdk {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
    queue_url: String,
}

impl Floor {
    /// The floor of submits to `stack`.
    pub(super) async fn new(stack: &Stack) -> Self {
        let sdk = match &stack.resources {
            Some(resources) => {
                let config = offpath_aws::load_sdk_config()
                    .await
                    .expect("the stack was made with this configuration");
                Some(Sdk {
                    dynamodb: aws_sdk_dynamodb::Client::new(&config),
                    sqs: aws_sdk_sqs::Client::new(&config),
                    table: resources.table.clone(),
                    queue_url: resources.queue_url.clone(),
                })
            }
            None => None,
        };
        Floor {
            ports: stack.ports.clone(),
            sdk,
        }
    }

    fn describe(&self) -> &'static str {
        match self.sdk {
            Some(_) => "PutItem + SendMessage with the AWS SDK",
            None => "embedded store create + queue send",
        }
    }

    /// One bare write and send of a light job.
    async fn submit(&self) -> anyhow::Result<()> {
        let new = new_job("embed", json!({"texts": [LIGHT_TEXT]}));
        match &self.sdk {
            Some(sdk) => {
                sdk.dynamodb
                    .put_item()
                    .table_name(&sdk.table)
                    .set_item(Some(offpath_aws::job_item(&Job::from_new(new.clone()))))
                    .send()
                    .await?;
                sdk.sqs
                    .send_message()
                    .queue_url(&sdk.queue_url)
                    .message_body(JobMessage::new(new.id).to_body())
                    .message_group_id(message_group(&new.owner))
                    .send()
                    .await?;
            }
            None => {
                self.ports.store.create(&new).await?;
                let group = message_group(&new.owner);
                self.ports
                    .queue
                    .send(&JobMessage::new(new.id), &group)
                    .await?;
            }
        }
        Ok(())
    }

    /// Percentiles of `count` floor submits, one every `interval`.
    pub(super) async fn latency(
        &self,
        count: usize,
        interval: Duration,
    ) -> anyhow::Result<Percentiles> {
        let mut took = Vec::with_capacity(count);
        let mut tick = tokio::time::interval(interval);
        for _ in 0..count {
            tick.tick().await;
            let start = Instant::now();
            self.submit().await?;
            took.push(start.elapsed());
        }
        Percentiles::of(&took).context("no floor submits")
    }
}
