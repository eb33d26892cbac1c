//! Where webhooks may go. Only `https`, and only to public addresses: after DNS
//! resolution, loopback, private, link-local (the instance metadata endpoint),
//! unique-local, shared, multicast and reserved addresses are refused, also when
//! written as IPv4-mapped IPv6. The check runs at submit (a `400` naming the reason)
//! and again at every delivery, where the HTTP client resolves through
//! [`UrlPolicy::resolver`] so a name that changed its answer meanwhile is refused before
//! a connection is made. A local run may allow receivers on `127.0.0.1` or `[::1]`
//! (http or https), written as such.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest accepted URL.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// How long resolving a webhook's host may take at submit.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a webhook URL is refused. The text is the `400`'s message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedUrl {
    /// Not a URL.
    #[error("webhook: not an absolute URL: {0}")]
    Malformed(String),
    /// Longer than [`MAX_URL_LEN`].
    #[error("webhook: longer than {MAX_URL_LEN} characters")]
    TooLong,
    /// Not https.
    #[error("webhook: only https URLs are accepted (got {0})")]
    NotHttps(String),
    /// User name or password in the URL.
    #[error("webhook: the URL must not carry credentials")]
    Credentials,
    /// The host is, or resolves to, an address no webhook may reach.
    #[error("webhook: {host} is {reason} address {ip}; webhooks go to public addresses only")]
    Forbidden {
        /// The host as written.
        host: String,
        /// The address.
        ip: IpAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// A host name without a dot: an internal name, never a public one.
    #[error("webhook: {0} is not a public host name")]
    SingleLabel(String),
    /// The host does not resolve.
    #[error("webhook: {0} does not resolve")]
    Unresolvable(String),
}

/// The rules for webhook URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    /// Accept `http://127.0.0.1`, `http://[::1]` (and https to them): `offpath dev`
    /// with `OFFPATH_WEBHOOK_ALLOW_LOOPBACK=1`, for receivers on the same machine.
    pub allow_loopback: bool,
}

impl UrlPolicy {
    /// Checks `url`, resolving its host. Returns the parsed URL.
    pub async fn check(&self, url: &str) -> Result<Url, RefusedUrl> {
        let parsed = self.check_syntax(url)?;
        let host = parsed
            .host_str()
            .ok_or_else(|| RefusedUrl::Malformed("no host".into()))?
            .to_owned();
        if parsed
            .host()
            .is_some_and(|h| matches!(h, url::Host::Domain(_)))
        {
            if !host.trim_end_matches('.').contains('.') {
                return Err(RefusedUrl::SingleLabel(host));
            }
            let port = parsed.port_or_known_default().unwrap_or(443);
            let lookup = tokio::net::lookup_host((host.as_str(), port));
            let addrs: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                _ => return Err(RefusedUrl::Unresolvable(host.clone())),
            };
            if addrs.is_empty() {
                return Err(RefusedUrl::Unresolvable(host));
            }
            for addr in addrs {
                self.check_ip(&host, addr.ip())?;
            }
        }
        Ok(parsed)
    }

    /// The checks that need no DNS: syntax, scheme, credentials and an IP literal host.
    pub fn check_syntax(&self, url: &str) -> Result<Url, RefusedUrl> {
        if url.len() > MAX_URL_LEN {
            return Err(RefusedUrl::TooLong);
        }
        let parsed = Url::parse(url).map_err(|e| RefusedUrl::Malformed(e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(RefusedUrl::Credentials);
        }
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(RefusedUrl::Malformed("no host".into())),
        };
        let local = literal.is_some_and(|ip| self.allow_loopback && ip.is_loopback());
        let scheme_ok = parsed.scheme() == "https" || (local && parsed.scheme() == "http");
        if !scheme_ok {
            return Err(RefusedUrl::NotHttps(format!("{}:", parsed.scheme())));
        }
        if let Some(ip) = literal {
            let host = parsed.host_str().unwrap_or_default().to_owned();
            self.check_ip(&host, ip)?;
        }
        Ok(parsed)
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), RefusedUrl> {
        if self.allow_loopback && ip.is_loopback() {
            return Ok(());
        }
        match forbidden(ip) {
            Some(reason) => Err(RefusedUrl::Forbidden {
                host: host.to_owned(),
                ip,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// A DNS resolver for the HTTP client that refuses names resolving to a forbidden
    /// address, so no connection to one is ever opened.
    pub fn resolver(&self) -> Arc<impl Resolve + 'static> {
        Arc::new(CheckedResolver { policy: *self })
    }
}

/// What kind of forbidden address `ip` is, or `None` for a public one.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4).map(|_| "an IPv4-mapped non-public");
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback")
            } else if v6.is_unspecified() {
                Some("an unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local")
            } else if v6.is_multicast() {
                Some("a multicast")
            } else if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64: the IPv4 address in the last 32 bits decides.
                let [.., a, b] = v6.segments();
                forbidden_v4(Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)))
                    .map(|_| "a NAT64 non-public")
            } else if first == 0x2001 && v6.segments()[1] == 0xdb8 {
                Some("a documentation")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback")
    } else if ip.is_private() {
        Some("a private")
    } else if ip.is_link_local() {
        Some("a link-local (instance metadata)")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved")
    } else if ip.is_documentation() {
        Some("a documentation")
    } else {
        None
    }
}

/// Resolves with the system resolver, then refuses forbidden answers.
struct CheckedResolver {
    policy: UrlPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy.check_ip(&host, addr.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: UrlPolicy, url: &str) -> String {
        policy.check_syntax(url).unwrap_err().to_string()
    }

    #[test]
    fn refuses_private_metadata_and_plain_http() {
        let aws = UrlPolicy::default();
        for (url, reason) in [
            ("https://10.0.0.1/hook", "a private"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://[fd00::1]/hook", "a unique-local"),
            ("https://[fe80::1]/hook", "a link-local"),
            ("https://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
            ("https://[::ffff:169.254.169.254]/", "IPv4-mapped"),
            ("https://[64:ff9b::a9fe:a9fe]/", "NAT64"),
            ("https://127.0.0.1/hook", "a loopback"),
            ("https://[::1]/hook", "a loopback"),
            ("https://100.64.0.1/", "shared"),
            ("https://0.0.0.0/", "unspecified"),
            ("http://93.184.215.14/hook", "only https"),
            ("http://127.0.0.1:9/hook", "only https"),
            ("ftp://example.com/", "only https"),
            ("https://user:pw@example.com/", "credentials"),
            ("not a url", "not an absolute URL"),
        ] {
            let text = refused(aws, url);
            assert!(text.contains(reason), "{url}: {text}");
        }
        assert!(aws.check_syntax("https://93.184.215.14/hook").is_ok());
        assert!(aws.check_syntax("https://example.com/hook").is_ok());
    }

    #[test]
    fn loopback_only_when_allowed_and_only_loopback() {
        let local = UrlPolicy {
            allow_loopback: true,
        };
        assert!(local.check_syntax("http://127.0.0.1:8081/hook").is_ok());
        assert!(local.check_syntax("http://[::1]:8081/hook").is_ok());
        assert!(refused(local, "http://10.0.0.1/hook").contains("only https"));
        assert!(refused(local, "https://10.0.0.1/hook").contains("a private"));
        assert!(refused(local, "http://localhost:8081/hook").contains("only https"));
    }

    #[tokio::test]
    async fn internal_names_are_refused_without_a_lookup() {
        let text = UrlPolicy::default()
            .check("https://metadata/computeMetadata")
            .await
            .unwrap_err()
            .to_string();
        assert!(text.contains("not a public host name"), "{text}");
    }

    #[test]
    fn resolved_addresses_are_checked_like_literals() {
        // What `check` and the HTTP client's resolver do with each answer of a lookup.
        let policy = UrlPolicy::default();
        let private = policy.check_ip("hooks.example.com", "10.1.2.3".parse().unwrap());
        assert!(
            private
                .unwrap_err()
                .to_string()
                .contains("hooks.example.com is a private")
        );
        assert!(
            policy
                .check_ip("hooks.example.com", "93.184.215.14".parse().unwrap())
                .is_ok()
        );
    }
}
