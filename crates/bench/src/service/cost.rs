//! The cost of a million embed jobs, from measured durations and sizes at public
//! on-demand prices, on Lambda + SQS + DynamoDB against one always-on SageMaker
//! instance.

use anyhow::Context as _;
use serde::Serialize;

use super::overhead::Overhead;
use super::pipeline::Pipeline;
use crate::{dp1, dp2};

/// Prices in USD, us-east-1, on-demand, as AWS's public price pages listed them
/// (Lambda, SQS, DynamoDB after the November 2024 on-demand cut, API Gateway HTTP
/// APIs, SageMaker hosting). Not fetched at run time: this machine has no internet.
const PRICES: Prices = Prices {
    date: "2026-11-24 (list prices as published since November 2024; check the pricing pages before relying on them)",
    lambda_gb_second: 0.000_016_666_7,
    lambda_request: 0.20 / 1e6,
    sqs_request: 0.40 / 1e6,
    dynamodb_write_unit: 0.625 / 1e6,
    dynamodb_read_unit: 0.125 / 1e6,
    http_api_request: 1.00 / 1e6,
    sagemaker_ml_m5_large_hour: 0.115,
};

struct Prices {
    date: &'static str,
    lambda_gb_second: f64,
    lambda_request: f64,
    sqs_request: f64,
    dynamodb_write_unit: f64,
    dynamodb_read_unit: f64,
    http_api_request: f64,
    sagemaker_ml_m5_large_hour: f64,
}

/// The worker function's memory in template.yaml: one full vCPU.
const WORKER_MB: f64 = 1769.0;
/// The api function's memory in template.yaml.
const API_MB: f64 = 256.0;
/// Lambda's smallest billed duration.
const MIN_BILLED_MS: f64 = 1.0;
/// Jobs costed.
const JOBS: f64 = 1e6;
/// Hours in a month, as AWS bills them.
const MONTH_HOURS: f64 = 730.0;

/// The estimate: prices, what it assumed, and the totals.
#[derive(Debug, Serialize)]
pub(super) struct Cost {
    jobs: f64,
    prices_usd: PriceList,
    assumptions: Assumptions,
    offpath_usd: OffpathUsd,
    sagemaker_async_usd: SageMakerUsd,
}

#[derive(Debug, Serialize)]
struct PriceList {
    as_of: &'static str,
    lambda_gb_second: f64,
    lambda_per_million_requests: f64,
    sqs_per_million_requests: f64,
    dynamodb_per_million_write_units: f64,
    dynamodb_per_million_read_units: f64,
    http_api_per_million_requests: f64,
    sagemaker_ml_m5_large_per_hour: f64,
}

#[derive(Debug, Serialize)]
struct Assumptions {
    worker_memory_mb: f64,
    #[serde(serialize_with = "dp1")]
    worker_billed_ms_per_job: f64,
    api_memory_mb: f64,
    #[serde(serialize_with = "dp1")]
    api_billed_ms_per_request: f64,
    stored_output_bytes: usize,
    dynamodb_write_units_per_job: f64,
    dynamodb_read_units_per_job: f64,
    sqs_requests_per_job: f64,
}

#[derive(Debug, Serialize)]
struct OffpathUsd {
    #[serde(serialize_with = "dp2")]
    lambda: f64,
    #[serde(serialize_with = "dp2")]
    sqs: f64,
    #[serde(serialize_with = "dp2")]
    dynamodb: f64,
    #[serde(serialize_with = "dp2")]
    api_gateway: f64,
    #[serde(serialize_with = "dp2")]
    total: f64,
}

#[derive(Debug, Serialize)]
struct SageMakerUsd {
    instance: &'static str,
    #[serde(serialize_with = "dp2")]
    busy_hours_for_the_jobs: f64,
    #[serde(serialize_with = "dp2")]
    cost_of_busy_hours: f64,
    #[serde(serialize_with = "dp2")]
    always_on_month: f64,
}

/// Estimates from the pipeline run with one poller and batches of 10 (one Lambda
/// instance kept busy with full batches), the submit latency, and the size of one
/// job's stored output.
pub(super) fn estimate(
    pipeline: &Pipeline,
    overhead: &Overhead,
    output_bytes: usize,
) -> anyhow::Result<Cost> {
    let run = pipeline
        .runs
        .iter()
        .find(|r| r.pollers == 1 && r.batch_size == 10)
        .context("no pipeline run with 1 poller and batch size 10")?;
    let jobs_per_second = run.jobs_per_second;
    let inference_ms = run.worker_ms_per_job.inference;
    let cores = pipeline.inference_threads as f64;
    // One poller is one busy Lambda instance: its wall time per job is what Lambda
    // bills (receives and deletes included, as a bound). Inference is CPU-bound: on
    // one vCPU it takes `cores` times what it took here.
    let worker_ms = 1000.0 / jobs_per_second + inference_ms * (cores - 1.0);
    let api_ms = overhead.offpath.p50.max(MIN_BILLED_MS);

    let p = &PRICES;
    let gb_s = |mb: f64, ms: f64| mb / 1024.0 * ms / 1000.0;
    // Per job: one worker invocation per 10 jobs; a submit and one status read.
    let lambda = JOBS
        * (gb_s(WORKER_MB, worker_ms) * p.lambda_gb_second
            + gb_s(API_MB, api_ms) * 2.0 * p.lambda_gb_second
            + (0.1 + 2.0) * p.lambda_request);
    // SendMessage, plus ReceiveMessage and DeleteMessageBatch per batch of 10.
    let sqs_requests = 1.2;
    let sqs = JOBS * sqs_requests * p.sqs_request;
    // Writes: create and claim (items under 1 KB), complete (input + output); one
    // strongly consistent read of the finished item (4 KB units).
    let finished_kb = (output_bytes as f64 + 1024.0) / 1024.0;
    let write_units = 2.0 + finished_kb.ceil();
    let read_units = (finished_kb / 4.0).ceil();
    let dynamodb = JOBS * (write_units * p.dynamodb_write_unit + read_units * p.dynamodb_read_unit);
    let api_gateway = JOBS * 2.0 * p.http_api_request;

    // One ml.m5.large (2 vCPU, like this machine) runs the same batched inference,
    // with no queue or table of ours around it.
    let busy_hours = JOBS * inference_ms / 1000.0 / 3600.0;
    Ok(Cost {
        jobs: JOBS,
        prices_usd: PriceList {
            as_of: p.date,
            lambda_gb_second: p.lambda_gb_second,
            lambda_per_million_requests: p.lambda_request * 1e6,
            sqs_per_million_requests: p.sqs_request * 1e6,
            dynamodb_per_million_write_units: p.dynamodb_write_unit * 1e6,
            dynamodb_per_million_read_units: p.dynamodb_read_unit * 1e6,
            http_api_per_million_requests: p.http_api_request * 1e6,
            sagemaker_ml_m5_large_per_hour: p.sagemaker_ml_m5_large_hour,
        },
        assumptions: Assumptions {
            worker_memory_mb: WORKER_MB,
            worker_billed_ms_per_job: worker_ms,
            api_memory_mb: API_MB,
            api_billed_ms_per_request: api_ms,
            stored_output_bytes: output_bytes,
            dynamodb_write_units_per_job: write_units,
            dynamodb_read_units_per_job: read_units,
            sqs_requests_per_job: sqs_requests,
        },
        offpath_usd: OffpathUsd {
            lambda,
            sqs,
            dynamodb,
            api_gateway,
            total: lambda + sqs + dynamodb + api_gateway,
        },
        sagemaker_async_usd: SageMakerUsd {
            instance: "ml.m5.large, always on",
            busy_hours_for_the_jobs: busy_hours,
            cost_of_busy_hours: busy_hours * p.sagemaker_ml_m5_large_hour,
            always_on_month: MONTH_HOURS * p.sagemaker_ml_m5_large_hour,
        },
    })
}
