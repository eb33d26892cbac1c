//! Who is an operator: who may read queue figures and act on dead letters. Reading
//! one's own jobs needs no more than being an owner.
//!
//! - Locally without API keys the single tenant `local` is the operator.
//! - `OFFPATH_OPERATORS` lists owners who are operators: API-key owners, JWT subjects,
//!   or IAM owners (`iam:<account>:<unique id>`).
//! - `OFFPATH_OPERATOR_CLAIM` (`claim=value`, e.g. `cognito:groups=offpath-operators`)
//!   makes every caller whose JWT claim holds the value an operator; a claim holding a
//!   list (`[a b]` as API Gateway passes Cognito groups, or `a,b`) matches any item.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use http::request::Parts;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

use crate::ApiError;
use crate::auth::{Auth, Principal};

/// The operators of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operators {
    owners: BTreeSet<String>,
    claim: Option<(String, String)>,
}

/// `OFFPATH_OPERATORS` or `OFFPATH_OPERATOR_CLAIM` cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum InvalidOperators {
    /// An empty owner in the list.
    #[error(
        "OFFPATH_OPERATORS is invalid: {0:?} holds an empty owner; expected owners separated by commas"
    )]
    Owners(String),
    /// Not `claim=value`.
    #[error(
        "OFFPATH_OPERATOR_CLAIM is invalid: {0:?} is not claim=value (e.g. cognito:groups=offpath-operators)"
    )]
    Claim(String),
}

impl Operators {
    /// Operators from the values of `OFFPATH_OPERATORS` and `OFFPATH_OPERATOR_CLAIM`;
    /// blank values count as unset.
    pub fn parse(owners: Option<&str>, claim: Option<&str>) -> Result<Self, InvalidOperators> {
        let owners = match owners.map(str::trim).filter(|s| !s.is_empty()) {
            None => BTreeSet::new(),
            Some(list) => list
                .split(',')
                .map(|owner| {
                    let owner = owner.trim();
                    (!owner.is_empty())
                        .then(|| owner.to_owned())
                        .ok_or_else(|| InvalidOperators::Owners(list.to_owned()))
                })
                .collect::<Result<_, _>>()?,
        };
        let claim = match claim.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(spec) => match spec.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                    Some((name.trim().to_owned(), value.trim().to_owned()))
                }
                _ => return Err(InvalidOperators::Claim(spec.to_owned())),
            },
        };
        Ok(Operators { owners, claim })
    }

    /// Operators from the environment.
    pub fn from_env() -> Result<Self, InvalidOperators> {
        let var = |name| std::env::var(name).ok();
        Self::parse(
            var("OFFPATH_OPERATORS").as_deref(),
            var("OFFPATH_OPERATOR_CLAIM").as_deref(),
        )
    }

    /// True when the caller of `parts`, authenticated as `principal` by `auth`, is an
    /// operator.
    pub(crate) fn includes(&self, auth: &Auth, principal: &Principal, parts: &Parts) -> bool {
        if *auth == Auth::SingleTenant || self.owners.contains(&principal.0) {
            return true;
        }
        let Some((name, wanted)) = &self.claim else {
            return false;
        };
        if *auth != Auth::ApiGateway {
            return false;
        }
        let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.request_context_ref()
        else {
            return false;
        };
        let claim = context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get(name));
        claim.is_some_and(|value| claim_holds(value, wanted))
    }
}

/// True when a claim's value is `wanted` or a list holding it (`[a b]`, `a,b`, JSON).
fn claim_holds(value: &str, wanted: &str) -> bool {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .split([',', ' '])
        .map(|item| item.trim().trim_matches('"'))
        .any(|item| item == wanted)
}

/// The caller is an operator: set by the authentication layer, required by the admin
/// routes (a `403` for anyone else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Operator>().copied().ok_or(ApiError::Forbidden(
            "operators only: queue figures and dead-letter actions need operator rights (OFFPATH_OPERATORS, OFFPATH_OPERATOR_CLAIM)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_claims_match() {
        let ops = Operators::parse(Some("alice, iam:1:AROA"), Some("cognito:groups=ops")).unwrap();
        assert!(ops.owners.contains("alice") && ops.owners.contains("iam:1:AROA"));
        assert_eq!(ops.claim, Some(("cognito:groups".into(), "ops".into())));
        assert_eq!(
            Operators::parse(None, Some(" ")).unwrap(),
            Operators::default()
        );
        for bad in ["a,,b", ","] {
            assert!(Operators::parse(Some(bad), None).is_err(), "{bad:?}");
        }
        for bad in ["groups", "=ops", "groups="] {
            let err = Operators::parse(None, Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("OFFPATH_OPERATOR_CLAIM"), "{err}");
        }
        assert!(claim_holds("[admins ops]", "ops"));
        assert!(claim_holds("ops", "ops"));
        assert!(claim_holds("[\"a\",\"ops\"]", "ops"));
        assert!(!claim_holds("[opsx]", "ops"));
        assert!(!claim_holds("", "ops"));
    }
}
