//! sd_notify: tell systemd (a `Type=notify` unit) that the agent is ready, by
//! sending `READY=1` as one datagram to the unix socket named in
//! `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). No
//! dependency: this is the whole protocol the agent needs.

use std::os::unix::net::UnixDatagram;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {socket:?}: {source}")]
    Send {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Send `state` (e.g. `READY=1`) if `NOTIFY_SOCKET` is set; returns whether a
/// message was sent.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Send `state` to the notify socket `socket`.
pub fn notify_to(socket: &str, state: &str) -> Result<(), NotifyError> {
    let err = |source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(err)?;
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?;
            sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
        }
        None => {
            sock.send_to(state.as_bytes(), socket).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.to_str().expect("utf8"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("berth-notify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind");
        notify_to(&format!("@{name}"), "READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn missing_socket_is_an_error() {
        assert!(notify_to("/nonexistent/berth.sock", "READY=1").is_err());
    }
}
