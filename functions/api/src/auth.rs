//! Who is calling: the job owner.

use axum::extract::FromRequestParts;
use http::request::Parts;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizerIamDescription;
use lambda_http::request::RequestContext;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;

/// The authenticated principal; jobs belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// How the API authenticates callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No authentication: every caller is the single tenant `local`.
    SingleTenant,
    /// A key from `Authorization: Bearer <key>` or `x-api-key`, mapped to an owner.
    ApiKeys(ApiKeys),
    /// API Gateway authenticated the caller: the JWT `sub` claim, or for IAM the
    /// caller's account and unique id (see [`iam_owner`]).
    ApiGateway,
}

/// API keys and their owners. Keys are kept as SHA-256 digests and a presented key is
/// compared with every one in constant time, so answer times say nothing about how
/// much of a key was right.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys(Vec<([u8; 32], String)>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

impl ApiKeys {
    /// The owner of `key`, if it is one of the keys.
    pub fn owner(&self, key: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every entry is compared; none is skipped when one matches.
        self.0.iter().fold(None, |found, (known, owner)| {
            let matches: bool = known.ct_eq(&digest).into();
            if matches { Some(owner.as_str()) } else { found }
        })
    }
}

/// `OFFPATH_API_KEYS` cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("OFFPATH_API_KEYS is invalid: {0}; expected key=owner pairs separated by commas")]
pub struct InvalidApiKeys(String);

impl Auth {
    /// Local authentication from `OFFPATH_API_KEYS` (`key=owner,key2=owner2`): API keys
    /// when set, the single tenant `local` when unset. Set but blank is an error, not
    /// an open API.
    pub fn from_api_keys(spec: Option<&str>) -> Result<Self, InvalidApiKeys> {
        let Some(spec) = spec else {
            return Ok(Auth::SingleTenant);
        };
        if spec.trim().is_empty() {
            return Err(InvalidApiKeys(
                "it is set but blank (unset it to run without keys on loopback)".into(),
            ));
        }
        let keys = spec
            .split(',')
            .map(|pair| match pair.trim().split_once('=') {
                Some((key, owner)) if !key.is_empty() && !owner.is_empty() => {
                    Ok((Sha256::digest(key.as_bytes()).into(), owner.to_owned()))
                }
                _ => Err(InvalidApiKeys(format!("{pair:?} is not key=owner"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Auth::ApiKeys(ApiKeys(keys)))
    }

    /// The caller of a request, or why it is not authenticated.
    pub(crate) fn principal(&self, parts: &Parts) -> Result<Principal, ApiError> {
        match self {
            Auth::SingleTenant => Ok(Principal("local".into())),
            Auth::ApiKeys(keys) => {
                let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
                let key = header("x-api-key")
                    .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")));
                let key = key.ok_or(ApiError::Unauthorized(
                    "send your API key as Authorization: Bearer <key> or x-api-key",
                ))?;
                keys.owner(key)
                    .map(|owner| Principal(owner.to_owned()))
                    .ok_or(ApiError::Unauthorized("the API key is not valid"))
            }
            Auth::ApiGateway => gateway_principal(parts.extensions.request_context_ref()).ok_or(
                ApiError::Unauthorized("the request carries no authenticated principal"),
            ),
        }
    }
}

fn gateway_principal(context: Option<&RequestContext>) -> Option<Principal> {
    let Some(RequestContext::ApiGatewayV2(context)) = context else {
        return None;
    };
    let authorizer = context.authorizer.as_ref()?;
    let jwt_sub = authorizer
        .jwt
        .as_ref()
        .and_then(|jwt| jwt.claims.get("sub"))
        .cloned();
    let iam_caller = authorizer.iam.as_ref().and_then(iam_owner);
    jwt_sub
        .or(iam_caller)
        .filter(|p| !p.is_empty())
        .map(Principal)
}

/// The owner of an IAM-signed request: `iam:<account>:<unique id>`, from the caller's
/// `userId`. For an IAM user that is the user's id (`AIDA…`); for an assumed role it is
/// the role's id (`AROA…`) without the session name, which whoever assumes the role
/// chooses. So every session of one role is one owner, and no caller can pick a
/// session name to read another session's jobs. Unique ids survive renames, and a role
/// deleted and created again under its old name gets a new one (and none of the old
/// jobs).
fn iam_owner(iam: &ApiGatewayRequestAuthorizerIamDescription) -> Option<String> {
    let account = iam.account_id.as_deref().filter(|a| !a.is_empty())?;
    let user_id = iam.user_id.as_deref()?;
    let unique = user_id.split(':').next().filter(|id| !id.is_empty())?;
    Some(format!("iam:{account}:{unique}"))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Internal(
                "route has no authentication layer".into(),
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iam_caller(user_arn: &str, user_id: &str) -> Option<Principal> {
        let context = serde_json::json!({
            "accountId": "123456789012",
            "authorizer": {"iam": {
                "accessKey": "ASIAEXAMPLE", "accountId": "123456789012",
                "callerId": user_id, "userArn": user_arn, "userId": user_id,
            }},
            "http": {"method": "GET", "path": "/jobs", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"},
            "requestId": "r", "routeKey": "GET /jobs", "stage": "$default",
            "time": "02/Dec/2026:10:00:00 +0000", "timeEpoch": 0,
        });
        let context = RequestContext::ApiGatewayV2(serde_json::from_value(context).unwrap());
        gateway_principal(Some(&context))
    }

    /// Two sessions of one role, whatever names their callers chose, are one owner;
    /// another role and an IAM user are others.
    #[test]
    fn iam_owners_are_unique_ids_not_session_names() {
        let role = "arn:aws:sts::123456789012:assumed-role/worker";
        let alice = iam_caller(&format!("{role}/alice"), "AROAEXAMPLEROLE:alice").unwrap();
        let chosen = iam_caller(&format!("{role}/bob"), "AROAEXAMPLEROLE:bob").unwrap();
        assert_eq!(alice, chosen);
        assert_eq!(alice.0, "iam:123456789012:AROAEXAMPLEROLE");
        let other = iam_caller(
            "arn:aws:sts::123456789012:assumed-role/other/alice",
            "AROAOTHERROLE:alice",
        );
        assert_ne!(other.as_ref(), Some(&alice));
        let user = iam_caller("arn:aws:iam::123456789012:user/carol", "AIDAEXAMPLEUSER");
        assert_eq!(user.unwrap().0, "iam:123456789012:AIDAEXAMPLEUSER");
        assert_eq!(iam_caller("arn:aws:iam::123456789012:user/x", ""), None);
    }

    #[test]
    fn api_keys_parse() {
        assert_eq!(Auth::from_api_keys(None).unwrap(), Auth::SingleTenant);
        let Auth::ApiKeys(keys) = Auth::from_api_keys(Some("k1=alice, k2=bob")).unwrap() else {
            panic!("expected api keys");
        };
        assert_eq!(keys.owner("k1"), Some("alice"));
        assert_eq!(keys.owner("k2"), Some("bob"));
        assert_eq!(keys.owner("k3"), None);
        assert_eq!(keys.owner("k"), None);
        assert!(!format!("{keys:?}").contains("k1"), "keys stay out of logs");
        for bad in ["k1", "", "  "] {
            let err = Auth::from_api_keys(Some(bad)).unwrap_err().to_string();
            assert!(
                err.starts_with("OFFPATH_API_KEYS is invalid"),
                "{bad:?}: {err}"
            );
        }
    }
}
