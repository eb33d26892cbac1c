//! What offpath's tests and benchmarks share, once: a [`Stack`] of fresh ports on
//! moto (or LocalStack) or the embedded backend, [`new_job`], a [`Hooked`] layer
//! that runs hooks around every port call (timing, crash and fault injection,
//! counting), a scripted [`TestModel`] and a [`CountTask`] registered like the real
//! tasks, the port [`conformance`] suite and the state machine's [`property`] test, a
//! verifying webhook [`Receiver`], the model's [`reference_embeddings`], the real
//! binaries ([`Dev`], [`binary`], [`bootstrap`]) and a loopback Lambda Runtime API
//! ([`Function`]).
//!
//! Tests talk to a real AWS-protocol server (moto started by `tests/run`, or
//! LocalStack when `AWS_ENDPOINT_URL` points at one), never to a fake SDK. No Lambda
//! function links this crate, nor does `offpath`: the benchmarks (`offpath-bench`) do.

pub mod conformance;
mod count;
mod events;
mod hooks;
mod jobs;
mod model;
mod process;
pub mod property;
mod proxy;
mod receiver;
mod reference;
mod runtime;
mod stack;

pub use count::{CountInput, CountOutput, CountTask};
pub use events::{fixture_batch, sqs_event};
pub use hooks::{Call, Hooked, Hooks};
pub use jobs::{OWNER, create, new_job, unfinished};
pub use model::{POISON_PIECE, TestModel};
pub use process::{Dev, binary, bootstrap};
pub use proxy::Proxy;
pub use receiver::{Delivery, Receiver};
pub use reference::{reference_embedding, reference_embeddings};
pub use runtime::{Answer, Function};
pub use stack::{Backend, Stack, drained, fast_queue, item_count, sdk, unique};
