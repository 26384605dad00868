//! This host's underlay address: the local address the kernel would use to
//! reach the coordinator. Found by connecting a UDP socket (which sends
//! nothing) and reading its local address; registered as the
//! `berth.underlay-ip` attribute and used as the VXLAN endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// `host:port` of an `http://host:port/...` URL (port 80 when absent).
pub fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split('/').next().filter(|h| !h.is_empty())?;
    if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        Some(host_port.to_string())
    } else {
        Some(format!("{host_port}:80"))
    }
}

/// The IPv4 source address for traffic to `url`'s host, if there is a route.
pub fn towards(url: &str) -> Option<Ipv4Addr> {
    let target: SocketAddr = authority(url)?
        .to_socket_addrs()
        .ok()?
        .find(SocketAddr::is_ipv4)?;
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(target).ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://10.0.0.1:8080", Some("10.0.0.1:8080")),
            ("http://10.0.0.1:8080/x", Some("10.0.0.1:8080")),
            ("http://coord", Some("coord:80")),
            ("127.0.0.1:9", Some("127.0.0.1:9")),
            ("http://", None),
        ];
        for (url, want) in cases {
            assert_eq!(authority(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn loopback_reaches_itself() {
        assert_eq!(towards("http://127.0.0.1:9"), Some(Ipv4Addr::LOCALHOST));
    }
}
