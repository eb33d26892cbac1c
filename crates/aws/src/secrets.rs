//! The webhook signing key: `OFFPATH_WEBHOOK_KEY` (and, while rotating,
//! `OFFPATH_WEBHOOK_PREVIOUS_KEY`) for a local run, or a Secrets Manager secret named by
//! `OFFPATH_WEBHOOK_KEY_SECRET` in a deployment, read at start-up: its `AWSCURRENT`
//! version signs, its `AWSPREVIOUS` version (if any) signs too, so receivers holding
//! the secret derived from the old key keep verifying during a rotation.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::ConfigError;

/// The key's text, current and previous.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyText {
    /// Signs every delivery; per-owner secrets derive from it.
    pub current: String,
    /// During a rotation, the key before.
    pub previous: Option<String>,
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(..)")
    }
}

/// The key set directly: `OFFPATH_WEBHOOK_KEY` (and `OFFPATH_WEBHOOK_PREVIOUS_KEY`), as
/// `lookup` reads them; `None` when unset.
pub fn key_setting(lookup: impl Fn(&str) -> Option<String>) -> Option<KeyText> {
    let var = |name| lookup(name).filter(|v: &String| !v.is_empty());
    Some(KeyText {
        current: var("OFFPATH_WEBHOOK_KEY")?,
        previous: var("OFFPATH_WEBHOOK_PREVIOUS_KEY"),
    })
}

/// The webhook key from the settings `lookup` reads (the environment, see
/// [`crate::lambda::webhook_key_from_env`]) or Secrets Manager; an error names the
/// setting.
pub async fn webhook_key(
    sdk: &SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<KeyText, ConfigError> {
    if let Some(key) = key_setting(&lookup) {
        return Ok(key);
    }
    let Some(secret) = lookup("OFFPATH_WEBHOOK_KEY_SECRET").filter(|v| !v.is_empty()) else {
        return Err(ConfigError::Missing {
            name: "OFFPATH_WEBHOOK_KEY_SECRET",
            hint: "set it to the ARN of the webhook key secret (the stack sets it), or set OFFPATH_WEBHOOK_KEY",
        });
    };
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let stage = |stage: &'static str| {
        let client = client.clone();
        let secret = secret.clone();
        async move {
            let read = client
                .get_secret_value()
                .secret_id(&secret)
                .version_stage(stage)
                .send()
                .await;
            match read {
                Ok(value) => Ok(value.secret_string().map(str::to_owned)),
                Err(SdkError::ServiceError(err))
                    if err.err().code() == Some("ResourceNotFoundException")
                        && stage == "AWSPREVIOUS" =>
                {
                    Ok(None)
                }
                Err(err) => Err(ConfigError::Invalid {
                    name: "OFFPATH_WEBHOOK_KEY_SECRET",
                    value: secret.clone(),
                    reason: format!(
                        "cannot read its {stage} version: {}",
                        crate::sdk::describe(&err)
                    ),
                }),
            }
        }
    };
    let current = stage("AWSCURRENT")
        .await?
        .ok_or_else(|| ConfigError::Invalid {
            name: "OFFPATH_WEBHOOK_KEY_SECRET",
            value: secret.clone(),
            reason: "the secret has no string value".into(),
        })?;
    Ok(KeyText {
        current,
        previous: stage("AWSPREVIOUS").await?,
    })
}
