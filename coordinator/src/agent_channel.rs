//! The server side of the agent channel (see `berth_api`): registration with a
//! one-time activation, the authenticated long-poll for desired state (which is
//! also the heartbeat), and idempotent state reports.
//!
//! **Architecture Invariant:** an agent can read and change only its own
//! instance's tasks: poll answers only tasks placed on the authenticated
//! instance, and `state::plan` ignores reports about any other task.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{
    ChannelError, PollRequest, PollResponse, RegisterRequest, RegisterResponse, ReportAck,
    StateReport, TaskSpec,
};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::error::{ApiError, ErrorKind};
use crate::model::{Instance, Model, Task};
use crate::state::{sha256_hex, Outcome, Request, StateHandle};

/// Longest time a poll is held before answering "no change".
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A channel answer: HTTP status and the encoded JSON body (encoded once,
/// straight from the answer's type: poll answers are the channel's bulk).
pub type Answer = (u16, Vec<u8>);

fn ok<T: Serialize>(v: &T) -> Answer {
    match serde_json::to_vec(v) {
        Ok(v) => (200, v),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode channel answer");
            error(500, "ServerException", "internal error")
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    let body = ChannelError {
        code: code.to_string(),
        message: message.to_string(),
    };
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

fn from_api(e: ApiError) -> Answer {
    match e.kind {
        ErrorKind::ServerException => {
            tracing::error!(error = %e.message, "agent channel internal error");
            error(500, "ServerException", "internal error")
        }
        ErrorKind::AccessDeniedException => error(401, "Unauthorized", &e.message),
        k => error(400, k.as_str(), &e.message),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| error(400, "SerializationException", &format!("invalid body: {e}")))
}

/// Authenticates `instance id:secret`; answers the instance's internal id.
pub fn authenticate(m: &Model, header: Option<&str>) -> Result<String, Answer> {
    let unauthorized = || error(401, "Unauthorized", "invalid instance credentials");
    let header = header.ok_or_else(unauthorized)?;
    let (ec2_id, secret) = header.split_once(':').ok_or_else(unauthorized)?;
    let id = m.instance_by_ec2_id.get(ec2_id).ok_or_else(unauthorized)?;
    let inst = m.instances.get(id).ok_or_else(unauthorized)?;
    let given = sha256_hex(secret);
    if bool::from(given.as_bytes().ct_eq(inst.secret_hash.as_bytes())) {
        Ok(inst.id.clone())
    } else {
        Err(unauthorized())
    }
}

pub async fn register(state: &StateHandle, body: &[u8]) -> Answer {
    let req: RegisterRequest = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    match state.submit(Request::RegisterInstance(req)).await {
        Ok((
            snap,
            Outcome::Registered {
                instance_id,
                secret,
            },
        )) => {
            let Some(inst) = snap.instances.get(&instance_id) else {
                return error(500, "ServerException", "internal error");
            };
            let cluster_arn = snap
                .clusters
                .get(&inst.cluster)
                .map(|c| c.arn.clone())
                .unwrap_or_default();
            state.heartbeats.beat(&inst.id);
            tracing::info!(instance = %inst.ec2_instance_id, cluster = %inst.cluster, "instance registered");
            ok(&RegisterResponse {
                container_instance_arn: inst.arn.clone(),
                cluster_arn,
                instance_id: inst.ec2_instance_id.clone(),
                secret,
            })
        }
        Ok(_) => error(500, "ServerException", "internal error"),
        Err(e) => from_api(e),
    }
}

fn spec(t: &Task) -> TaskSpec {
    TaskSpec {
        task_arn: t.arn.clone(),
        cluster_arn: t.cluster_arn.clone(),
        task_definition_arn: t.task_definition_arn.clone(),
        family: t.family.clone(),
        revision: t.revision,
        desired_status: t.desired_status,
        network_mode: t.network_mode.clone(),
        stop_reason: t.stopped_reason.clone(),
        stop_code: t.stop_code,
        containers: t.containers.iter().map(|c| c.spec.clone()).collect(),
        reserved_ports: t.reserved_ports.clone(),
        awsvpc: t.awsvpc.as_ref().map(|a| a.attachment.clone()),
    }
}

/// The answer for an instance at its current desired version.
pub fn desired(
    m: &Model,
    inst: &Instance,
    known: u64,
    cidr: &crate::network::Cidr,
) -> Option<PollResponse> {
    let version = m.poll_version(inst);
    if inst.status == "INACTIVE" {
        return Some(PollResponse {
            version,
            changed: known != version,
            tasks: vec![],
            deregistered: true,
            awsvpc_network: None,
        });
    }
    if version == known {
        return None;
    }
    Some(PollResponse {
        version,
        changed: true,
        tasks: m.active_tasks_on(&inst.id).map(|t| spec(t)).collect(),
        deregistered: false,
        awsvpc_network: Some(awsvpc_network(m, inst, cidr)),
    })
}

/// The awsvpc membership of `inst`'s cluster: the registered instances with
/// an underlay address or active awsvpc tasks, and those tasks' endpoints
/// (an instance with neither gives its peers nothing to program, so it is
/// left out). A change anywhere in it bumps the cluster's
/// awsvpc epoch, which wakes every member's poll; so the answer is a function
/// of (cluster, epoch) and is computed once per epoch, not once per poll.
pub fn awsvpc_network(
    m: &Model,
    inst: &Instance,
    cidr: &crate::network::Cidr,
) -> berth_api::AwsvpcNetwork {
    let epoch = m.awsvpc_epochs.get(&inst.cluster).copied().unwrap_or(0);
    let cluster = m.clusters.get(&inst.cluster).cloned();
    let key = cidr.to_string();
    if let Some(cluster) = &cluster {
        if let Some(hit) = NETWORKS.with(|memo| {
            memo.borrow().get(&inst.cluster).and_then(|e| {
                (Arc::ptr_eq(&e.cluster, cluster) && e.epoch == epoch && e.cidr == key)
                    .then(|| e.network.clone())
            })
        }) {
            return hit;
        }
    }
    let members = m
        .instances
        .values()
        .filter(|i| i.cluster == inst.cluster && i.status != "INACTIVE")
        .filter_map(|i| {
            let endpoints: Vec<berth_api::AwsvpcEndpoint> = m
                .active_tasks_on(&i.id)
                .filter_map(|t| t.awsvpc.as_ref())
                .map(|e| berth_api::AwsvpcEndpoint {
                    ip: e.attachment.ip.clone(),
                    mac: e.attachment.mac.clone(),
                })
                .collect();
            let underlay_ip = crate::model::underlay_of(i).map(str::to_string);
            (underlay_ip.is_some() || !endpoints.is_empty()).then(|| berth_api::AwsvpcMember {
                instance_id: i.ec2_instance_id.clone(),
                underlay_ip,
                overlay_subnet: key.clone(),
                endpoints,
            })
        })
        .collect();
    let network = berth_api::AwsvpcNetwork {
        cidr: key.clone(),
        gateway: cidr.gateway().to_string(),
        members,
    };
    if let Some(cluster) = cluster {
        NETWORKS.with(|memo| {
            memo.borrow_mut().insert(
                inst.cluster.clone(),
                NetworkMemo {
                    cluster,
                    epoch,
                    cidr: key,
                    network: network.clone(),
                },
            )
        });
    }
    network
}

/// One cluster's computed membership and what it was computed from.
struct NetworkMemo {
    /// Held, so a recreated cluster (a new `Arc`) never matches.
    cluster: Arc<crate::model::Cluster>,
    epoch: u64,
    cidr: String,
    network: berth_api::AwsvpcNetwork,
}

thread_local! {
    /// Per worker thread: poll answers are built on the HTTP runtime's threads.
    static NETWORKS: std::cell::RefCell<std::collections::HashMap<String, NetworkMemo>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

pub async fn poll(
    state: &StateHandle,
    auth: Option<&str>,
    body: &[u8],
    mut shutdown: watch::Receiver<bool>,
) -> Answer {
    let id = match authenticate(&state.snapshot(), auth) {
        Ok(id) => id,
        Err(a) => return a,
    };
    let req: PollRequest = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    state.heartbeats.beat(&id);
    let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut waker = state.instance_waker(&id);
    let answer = loop {
        // Mark seen before reading the snapshot: the owner publishes the
        // snapshot before it signals, so no change can slip between the two.
        waker.mark_seen();
        let snap = state.snapshot();
        let Some(inst) = snap.instances.get(&id) else {
            break error(401, "Unauthorized", "instance is gone");
        };
        if let Some(resp) = desired(&snap, inst, req.known_version, &state.awsvpc_cidr) {
            break ok(&resp);
        }
        tokio::select! {
            changed = waker.changed() => {
                if changed.is_err() {
                    break error(503, "ServiceUnavailable", "coordinator is stopping");
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                break ok(&PollResponse {
                    version: snap.poll_version(inst),
                    changed: false,
                    tasks: vec![],
                    deregistered: false,
                    awsvpc_network: None,
                });
            }
            _ = shutdown.wait_for(|s| *s) => {
                break ok(&PollResponse {
                    version: snap.poll_version(inst),
                    changed: false,
                    tasks: vec![],
                    deregistered: false,
                    awsvpc_network: None,
                });
            }
        }
    };
    state.heartbeats.beat(&id);
    answer
}

pub async fn report(state: &StateHandle, auth: Option<&str>, body: &[u8]) -> Answer {
    let id = match authenticate(&state.snapshot(), auth) {
        Ok(id) => id,
        Err(a) => return a,
    };
    let report: StateReport = match parse(body) {
        Ok(r) => r,
        Err(a) => return a,
    };
    state.heartbeats.beat(&id);
    match state
        .submit(Request::Report {
            instance: id,
            report,
        })
        .await
    {
        Ok((_, Outcome::Acked(seq))) => ok(&ReportAck { acked_seq: seq }),
        Ok(_) => error(500, "ServerException", "internal error"),
        Err(e) => from_api(e),
    }
}
