//! Berth agent library: registration, the coordinator channel client, the
//! reconciler that turns desired tasks into containerd containers, and the
//! state the agent keeps across restarts. `main.rs` is a thin CLI over this.
//!
//! Code map:
//! - [`resources`]: CPU/memory/ports/attributes the host registers with.
//! - [`channel`]: HTTP client of the coordinator's agent channel (register,
//!   long-poll, report) with backoff; the poll and report loops.
//! - [`reconcile`]: the pure diff and the driver that applies it via [`runtime`].
//! - [`procspec`]: container definition + image config → create request.
//! - [`state`]: files under the data directory (identity, state, report seq).
//! - [`config`]: settings from flags, environment and the config file.
//! - [`notify`]: sd_notify readiness.
//! - [`logs`]: container log rotation and cleanup.
//! - [`agent`]: wiring of the above for `berth-agent run`.
//! - [`backoff`]: exponential backoff with jitter.
//!
//! **Architecture Invariant:** only [`runtime`] talks to containerd; the
//! reconciler sees it through the `Runtime` trait alone (and is tested with a
//! fake).
//!
//! **Architecture Invariant:** the driver's event loop is the only owner of
//! the task records and of `state.json`; jobs, waiters, the poller and the
//! reporter talk to it through one event channel, never through shared locks.
//!
//! **Architecture Invariant:** what runs is decided from containerd's labels
//! after a restart, never from the state file alone; stopping the agent never
//! stops tasks.

pub mod agent;
pub mod backoff;
pub mod channel;
pub mod config;
pub mod logs;
pub mod network;
pub mod notify;
pub mod procspec;
pub mod reconcile;
pub mod resources;
pub mod runtime;
pub mod state;
