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

pub mod agent;
pub mod backoff;
pub mod channel;
pub mod config;
pub mod logs;
pub mod notify;
pub mod procspec;
pub mod reconcile;
pub mod resources;
pub mod runtime;
pub mod state;
