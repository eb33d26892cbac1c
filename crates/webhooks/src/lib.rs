//! Webhooks, the parts that need no job store: the per-owner signing secrets derived
//! from one configured key ([`WebhookKeys`]), Standard Webhooks signatures, the URL
//! policy that keeps deliveries away from private networks ([`UrlPolicy`]), and one
//! bounded delivery attempt over HTTP ([`Sender`]).

mod keys;
mod policy;
mod sender;

pub use keys::{KeyError, WebhookKeys};
pub use policy::{RefusedUrl, UrlPolicy};
pub use sender::{Attempt, Sender};
