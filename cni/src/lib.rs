//! Berth's CNI plugins and the netlink operations they are built on.
//!
//! Issue #2 (the single-host spine) supports only the `host` and `none`
//! network modes, which need no plugin: `host` shares the host namespace and
//! `none` gets a fresh namespace from runc with loopback up. The `bridge` and
//! `awsvpc` plugins (spec 1.0: ADD, DEL, CHECK, VERSION) land here with the
//! networking issue; until then this crate deliberately exports nothing and the
//! agent refuses those modes with a plain `TaskFailedToStart` reason.
