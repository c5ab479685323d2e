//! Where webhooks and tool calls may connect.
//!
//! Webhook and tool URLs come from assistants, so whoever may write an assistant
//! chooses where the server sends requests. Some addresses are never a webhook
//! receiver and are a classic target of server-side request forgery: the cloud
//! metadata services (169.254.169.254, fd00:ec2::254), which hand out the machine's
//! credentials, and the rest of link-local, plus unspecified, multicast and
//! broadcast addresses. Those are refused twice: for an IP literal in the URL
//! ([`check_host`], since literals skip DNS) and for every address a name resolves to
//! ([`GuardedResolver`], at connect time, so a name that later resolves elsewhere,
//! DNS rebinding, still cannot reach them).
//!
//! Loopback and private networks stay reachable: on a self-hosted platform the tools
//! are often services next to it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// AWS's IPv6 instance metadata address.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254);

/// Whether no webhook or tool call may connect to `ip` (see the module doc).
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden(IpAddr::V4(v4)),
            None => {
                let link_local = v6.segments()[0] & 0xffc0 == 0xfe80;
                v6.is_unspecified() || v6.is_multicast() || link_local || v6 == METADATA_V6
            }
        },
    }
}

/// Refuses a URL whose host is an IP literal that [`forbidden`] names.
pub fn check_host(url: &reqwest::Url) -> Result<(), &'static str> {
    let host = url.host_str().unwrap_or_default();
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match literal.parse::<IpAddr>() {
        Ok(ip) if forbidden(ip) => Err("the host is a link-local, metadata, multicast or unspecified address"),
        _ => Ok(()),
    }
}

/// The system resolver, less the addresses [`forbidden`] names. A name with no other
/// address fails to resolve, and the request fails as unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let mut allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let found = allowed.len();
            allowed.retain(|a| !forbidden(a.ip()));
            if allowed.is_empty() && found > 0 {
                tracing::warn!(host, "a webhook or tool host resolves only to forbidden addresses; not connecting");
                return Err(format!("{host} resolves only to link-local, metadata, multicast or unspecified addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn metadata_and_link_local_are_forbidden_loopback_and_private_are_not() {
        for bad in ["169.254.169.254", "169.254.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "fe80::1", "febf::1", "ff02::1", "fd00:ec2::254", "::ffff:169.254.169.254"] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["127.0.0.1", "10.0.0.5", "192.168.1.1", "172.16.0.1", "8.8.8.8", "::1", "fd00::1", "2001:db8::1", "fec0::1"] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn literal_hosts_are_checked() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert!(check_host(&url("http://169.254.169.254/latest/meta-data/")).is_err());
        assert!(check_host(&url("http://[fd00:ec2::254]/")).is_err());
        assert!(check_host(&url("http://[::ffff:a9fe:a9fe]/")).is_err(), "169.254.169.254, mapped");
        assert!(check_host(&url("http://0x7f.1/")).is_ok(), "the URL parser reads it as 127.0.0.1");
        assert!(check_host(&url("http://2852039166/")).is_err(), "169.254.169.254 as one number");
        assert!(check_host(&url("http://127.0.0.1:8080/hook")).is_ok());
        assert!(check_host(&url("https://example.com/hook")).is_ok());
    }

    #[tokio::test]
    async fn names_lose_their_forbidden_addresses() {
        let r = GuardedResolver;
        let err = r.resolve(Name::from_str("169.254.169.254").unwrap()).await.err().expect("refused");
        assert!(err.to_string().contains("link-local"), "{err}");
        let ok: Vec<SocketAddr> = r.resolve(Name::from_str("localhost").unwrap()).await.unwrap().collect();
        assert!(!ok.is_empty() && ok.iter().all(|a| a.ip().is_loopback()), "{ok:?}");
    }

    #[tokio::test]
    async fn the_client_reaches_a_named_host_on_its_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            socket.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await.unwrap();
        });
        let client = crate::default_client().unwrap();
        let res = client.get(format!("http://localhost:{port}/hook")).send().await.expect("resolved and connected");
        assert_eq!(res.status(), 204, "the resolver's addresses get the URL's port");
    }
}
