//! Tables for the pure parts of the reconciler: `diff`, `stop_wanted`,
//! `task_report` and `adopt`.

use super::*;
use berth_api::{ContainerSpec, NetworkBinding, PortMapping};
use std::collections::BTreeMap;

const ARN: &str = "arn:aws:ecs:r:1:task/c/t1";

fn spec(status: DesiredStatus, mode: &str) -> TaskSpec {
    TaskSpec {
        task_arn: ARN.into(),
        cluster_arn: "arn:aws:ecs:r:1:cluster/c".into(),
        task_definition_arn: "arn:aws:ecs:r:1:task-definition/f:1".into(),
        family: "f".into(),
        revision: 1,
        desired_status: status,
        network_mode: mode.into(),
        stop_reason: None,
        stop_code: None,
        containers: vec![
            ContainerSpec {
                name: "app".into(),
                image: "img".into(),
                essential: true,
                port_mappings: vec![PortMapping {
                    container_port: Some(8080),
                    host_port: None,
                    protocol: None,
                }],
                ..Default::default()
            },
            ContainerSpec {
                name: "side".into(),
                image: "img".into(),
                essential: false,
                ..Default::default()
            },
        ],
        reserved_ports: vec![],
        awsvpc: None,
    }
}

fn running() -> TaskSpec {
    spec(DesiredStatus::Running, "host")
}

fn stopped_by_user() -> TaskSpec {
    let mut s = spec(DesiredStatus::Stopped, "host");
    s.stop_reason = Some("bye".into());
    s
}

/// A record built from the running spec with the given container states.
fn record(app: ContainerState, side: ContainerState) -> TaskRecord {
    let mut r = TaskRecord::from_spec(&running());
    r.containers[0].state = app;
    r.containers[1].state = side;
    r
}

fn started(mut r: TaskRecord) -> TaskRecord {
    r.started_at = Some(10.0);
    r
}

fn stopped(mut r: TaskRecord, acked: bool, deleted: bool) -> TaskRecord {
    r.stop = Some(StopDecision::new(
        StopCode::EssentialContainerExited,
        ESSENTIAL_EXITED_REASON,
    ));
    r.stopped_at = Some(20.0);
    r.deleted = deleted;
    if acked {
        r.acked = Some(task_report(&r));
    }
    r
}

const RUN: ContainerState = ContainerState::Running { pid: 1 };
const ABSENT: ContainerState = ContainerState::Absent;
const fn exited(code: i32) -> ContainerState {
    ContainerState::Exited {
        exit_code: Some(code),
    }
}

fn essential_exit() -> StopDecision {
    StopDecision::new(StopCode::EssentialContainerExited, ESSENTIAL_EXITED_REASON)
}

fn user_stop() -> StopDecision {
    StopDecision::new(StopCode::UserInitiated, "bye")
}

#[test]
fn diff_table() {
    let start = || Action::Start {
        task_arn: ARN.into(),
    };
    let with_job = |mut r: TaskRecord, job: JobKind| {
        r.job = Some(job);
        r
    };
    let cancel_requested = |mut r: TaskRecord| {
        r.job = Some(JobKind::Starting);
        r.cancel_requested = true;
        r
    };
    let with_backoff = |mut r: TaskRecord| {
        r.backoff = true;
        r
    };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<TaskSpec>, Option<TaskRecord>, bool, bool, Vec<Action>)> = vec![
        ("new task starts", vec![running()], None, false, false, vec![start()]),
        (
            "an unknown mode is rejected",
            vec![spec(DesiredStatus::Running, "nat")],
            None,
            false,
            false,
            vec![Action::Reject {
                task_arn: ARN.into(),
                stop: StopDecision::new(
                    StopCode::TaskFailedToStart,
                    "CannotStartContainerError: network mode nat is not supported (host, none, bridge and awsvpc are)",
                ),
            }],
        ),
        (
            "default mode is bridge, which starts",
            vec![spec(DesiredStatus::Running, "")],
            None,
            false,
            false,
            vec![start()],
        ),
        (
            "stopped before it ever ran",
            vec![stopped_by_user()],
            None,
            false,
            false,
            vec![Action::Reject { task_arn: ARN.into(), stop: user_stop() }],
        ),
        ("tombstoned task is not rerun", vec![running()], None, true, false, vec![]),
        ("deregistered starts nothing", vec![running()], None, false, true, vec![]),
        ("running task: nothing", vec![running()], Some(started(record(RUN, RUN))), false, false, vec![]),
        ("start in flight: nothing", vec![running()], Some(with_job(record(ABSENT, ABSENT), JobKind::Starting)), false, false, vec![]),
        (
            "interrupted start resumes",
            vec![running()],
            Some(record(ContainerState::Created, ABSENT)),
            false,
            false,
            vec![start()],
        ),
        (
            "non-essential exit keeps the task",
            vec![running()],
            Some(started(record(RUN, exited(3)))),
            false,
            false,
            vec![],
        ),
        (
            "essential exit stops the rest",
            vec![running()],
            Some(started(record(exited(1), RUN))),
            false,
            false,
            vec![Action::Stop { task_arn: ARN.into(), stop: essential_exit() }],
        ),
        (
            "all exited: finalize",
            vec![running()],
            Some(started(record(exited(0), exited(0)))),
            false,
            false,
            vec![Action::Finalize { task_arn: ARN.into(), stop: essential_exit() }],
        ),
        (
            "user stop of a running task",
            vec![stopped_by_user()],
            Some(started(record(RUN, RUN))),
            false,
            false,
            vec![Action::Stop { task_arn: ARN.into(), stop: user_stop() }],
        ),
        (
            "user stop during start cancels it",
            vec![stopped_by_user()],
            Some(with_job(record(ABSENT, ABSENT), JobKind::Starting)),
            false,
            false,
            vec![Action::CancelStart { task_arn: ARN.into(), stop: user_stop() }],
        ),
        (
            "cancel is asked once",
            vec![stopped_by_user()],
            Some(cancel_requested(record(ABSENT, ABSENT))),
            false,
            false,
            vec![],
        ),
        (
            "essential exit during start cancels it",
            vec![running()],
            Some(with_job(record(exited(2), ABSENT), JobKind::Starting)),
            false,
            false,
            vec![Action::CancelStart { task_arn: ARN.into(), stop: essential_exit() }],
        ),
        ("stop in flight: nothing", vec![stopped_by_user()], Some(with_job(started(record(RUN, RUN)), JobKind::Stopping)), false, false, vec![]),
        ("failed job waits for the timer", vec![stopped_by_user()], Some(with_backoff(started(record(RUN, RUN)))), false, false, vec![]),
        (
            "not desired any more: stop",
            vec![],
            Some(started(record(RUN, RUN))),
            false,
            false,
            vec![Action::Stop {
                task_arn: ARN.into(),
                stop: StopDecision { code: None, reason: NOT_WANTED_REASON.into() },
            }],
        ),
        (
            "deregistered: stop",
            vec![running()],
            Some(started(record(RUN, RUN))),
            false,
            true,
            vec![Action::Stop {
                task_arn: ARN.into(),
                stop: StopDecision { code: None, reason: NOT_WANTED_REASON.into() },
            }],
        ),
        ("stopped, not acked: wait", vec![running()], Some(stopped(record(exited(1), exited(137)), false, false)), false, false, vec![]),
        (
            "stopped and acked: delete",
            vec![running()],
            Some(stopped(record(exited(1), exited(137)), true, false)),
            false,
            false,
            vec![Action::Delete { task_arn: ARN.into() }],
        ),
        (
            "deregistered deletes without ack",
            vec![],
            Some(stopped(record(exited(1), exited(137)), false, false)),
            false,
            true,
            vec![Action::Delete { task_arn: ARN.into() }],
        ),
        ("deleted but still desired: keep", vec![running()], Some(stopped(record(exited(1), exited(137)), true, true)), false, false, vec![]),
        (
            "deleted and not desired: forget",
            vec![],
            Some(stopped(record(exited(1), exited(137)), true, true)),
            false,
            false,
            vec![Action::Forget { task_arn: ARN.into() }],
        ),
        ("delete in flight: nothing", vec![], Some(with_job(stopped(record(exited(1), exited(1)), true, false), JobKind::Deleting)), false, false, vec![]),
    ];
    for (name, desired, rec, tombstoned, deregistered, expected) in cases {
        let mut tasks = BTreeMap::new();
        if let Some(r) = rec {
            tasks.insert(ARN.to_string(), r);
        }
        let mut tombstones = BTreeMap::new();
        if tombstoned {
            tombstones.insert(ARN.to_string(), 1.0);
        }
        let observed = ObservedTasks {
            tasks: &tasks,
            tombstones: &tombstones,
            deregistered,
        };
        assert_eq!(diff(&desired, &observed), expected, "{name}");
    }
}

#[test]
fn stop_wanted_prefers_the_first_decision() {
    let mut r = started(record(exited(1), RUN));
    r.stop = Some(StopDecision::new(
        StopCode::TaskFailedToStart,
        "CannotPullContainerError: x",
    ));
    assert_eq!(
        stop_wanted(Some(&stopped_by_user()), &r),
        Some(StopDecision::new(
            StopCode::TaskFailedToStart,
            "CannotPullContainerError: x"
        ))
    );
    let mut s = stopped_by_user();
    s.stop_code = Some(StopCode::ServiceSchedulerInitiated);
    s.stop_reason = None;
    assert_eq!(
        stop_wanted(Some(&s), &started(record(RUN, RUN))),
        Some(StopDecision::new(
            StopCode::ServiceSchedulerInitiated,
            DEFAULT_STOP_REASON
        ))
    );
    assert_eq!(stop_wanted(Some(&running()), &record(ABSENT, ABSENT)), None);
}

#[test]
fn report_table() {
    let cases: Vec<(
        &str,
        TaskRecord,
        TaskStatus,
        Vec<(ContainerStatus, Option<i32>)>,
    )> = vec![
        (
            "pending",
            record(ABSENT, ContainerState::Created),
            TaskStatus::Pending,
            vec![
                (ContainerStatus::Pending, None),
                (ContainerStatus::Pending, None),
            ],
        ),
        (
            "running",
            started(record(RUN, RUN)),
            TaskStatus::Running,
            vec![
                (ContainerStatus::Running, None),
                (ContainerStatus::Running, None),
            ],
        ),
        (
            "side exited",
            started(record(RUN, exited(3))),
            TaskStatus::Running,
            vec![
                (ContainerStatus::Running, None),
                (ContainerStatus::Stopped, Some(3)),
            ],
        ),
        (
            "stopped",
            stopped(started(record(exited(1), exited(137))), false, false),
            TaskStatus::Stopped,
            vec![
                (ContainerStatus::Stopped, Some(1)),
                (ContainerStatus::Stopped, Some(137)),
            ],
        ),
        (
            "stopped before start",
            stopped(record(ABSENT, ABSENT), false, true),
            TaskStatus::Stopped,
            vec![
                (ContainerStatus::Stopped, None),
                (ContainerStatus::Stopped, None),
            ],
        ),
    ];
    for (name, r, status, containers) in cases {
        let rep = task_report(&r);
        assert_eq!(rep.last_status, status, "{name}");
        let got: Vec<_> = rep
            .containers
            .iter()
            .map(|c| (c.last_status, c.exit_code))
            .collect();
        assert_eq!(got, containers, "{name}");
        assert_eq!(rep.task_arn, ARN);
        assert_eq!(
            rep.stop_code,
            r.stop.as_ref().and_then(|s| s.code),
            "{name}"
        );
    }
    let rep = task_report(&started(record(RUN, RUN)));
    assert_eq!(
        rep.containers[0].network_bindings,
        vec![NetworkBinding {
            bind_ip: "0.0.0.0".into(),
            container_port: 8080,
            host_port: 8080,
            protocol: "tcp".into()
        }]
    );
    assert_eq!(rep.containers[0].runtime_id.as_deref(), Some("t1-app"));
    assert!(task_report(&record(ABSENT, ABSENT)).containers[0]
        .runtime_id
        .is_none());
}

fn observed(id: &str, task: &str, name: &str, state: ObservedState) -> ObservedContainer {
    ObservedContainer {
        id: id.into(),
        labels: [
            (LABEL_TASK_ARN.to_string(), task.to_string()),
            (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
        ]
        .into_iter()
        .collect(),
        state,
    }
}

#[test]
fn adopt_table() {
    let persisted = |r: TaskRecord| -> BTreeMap<String, TaskRecord> {
        [(ARN.to_string(), r)].into_iter().collect()
    };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        BTreeMap<String, TaskRecord>,
        Vec<ObservedContainer>,
        Vec<(&str, ContainerState)>,
    )> = vec![
        (
            "still running",
            persisted(started(record(RUN, RUN))),
            vec![
                observed("t1-app", ARN, "app", ObservedState::Running { pid: 7 }),
                observed("t1-side", ARN, "side", ObservedState::Running { pid: 8 }),
            ],
            vec![
                ("app", ContainerState::Running { pid: 7 }),
                ("side", ContainerState::Running { pid: 8 }),
            ],
        ),
        (
            "exited while down",
            persisted(started(record(RUN, RUN))),
            vec![
                observed("t1-app", ARN, "app", ObservedState::Exited { exit_code: 3 }),
                observed("t1-side", ARN, "side", ObservedState::Running { pid: 8 }),
            ],
            vec![
                ("app", exited(3)),
                ("side", ContainerState::Running { pid: 8 }),
            ],
        ),
        (
            "process vanished (containerd restarted)",
            persisted(started(record(RUN, RUN))),
            vec![observed("t1-app", ARN, "app", ObservedState::Created)],
            vec![
                ("app", ContainerState::Exited { exit_code: None }),
                ("side", ContainerState::Exited { exit_code: None }),
            ],
        ),
        (
            "created before crash, never started",
            persisted(record(ABSENT, ABSENT)),
            vec![observed("t1-app", ARN, "app", ObservedState::Created)],
            vec![("app", ContainerState::Created), ("side", ABSENT)],
        ),
        (
            "unknown to the state file",
            BTreeMap::new(),
            vec![observed(
                "t1-app",
                ARN,
                "app",
                ObservedState::Running { pid: 9 },
            )],
            vec![("app", ContainerState::Running { pid: 9 })],
        ),
    ];
    for (name, persisted, obs, expected) in cases {
        let (records, unmanaged) = adopt(persisted, &obs);
        assert!(unmanaged.is_empty(), "{name}");
        let r = records.get(ARN).expect(name);
        let got: Vec<_> = r
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.state))
            .collect();
        assert_eq!(got, expected, "{name}");
        assert!(r.job.is_none() && !r.backoff, "{name}");
    }
    let stray = ObservedContainer {
        id: "other".into(),
        labels: BTreeMap::new(),
        state: ObservedState::Created,
    };
    let (records, unmanaged) = adopt(BTreeMap::new(), &[stray]);
    assert!(records.is_empty());
    assert_eq!(unmanaged, vec!["other".to_string()]);
    // A vanished container is explained in its reason.
    let (records, _) = adopt(persisted(started(record(RUN, RUN))), &[]);
    assert_eq!(
        records[ARN].containers[0].reason.as_deref(),
        Some(VANISHED_REASON)
    );
}

#[test]
fn report_due_table() {
    let pending = task_report(&record(ABSENT, ABSENT));
    let mut pulled = record(ABSENT, ABSENT);
    pulled.pull_started_at = Some(1.0);
    pulled.containers[0].state = ContainerState::Created;
    let pulled = task_report(&pulled);
    let running = task_report(&started(record(RUN, RUN)));
    let side_exit = task_report(&started(record(RUN, exited(4))));
    let stopped_a = task_report(&stopped(
        started(record(exited(1), exited(4))),
        false,
        false,
    ));
    let mut late = stopped(started(record(exited(1), exited(4))), false, false);
    late.execution_stopped_at = Some(99.0);
    let stopped_b = task_report(&late);
    let with_health = |h| {
        let mut r = started(record(RUN, RUN));
        r.containers[0].health = h;
        task_report(&r)
    };
    let checking = with_health(Some(berth_api::HealthStatus::Unknown));
    let healthy = with_health(Some(berth_api::HealthStatus::Healthy));
    let unhealthy = with_health(Some(berth_api::HealthStatus::Unhealthy));
    assert_eq!(
        healthy.containers[0].health_status,
        Some(berth_api::HealthStatus::Healthy)
    );
    let cases: Vec<(&str, Option<&TaskReport>, &TaskReport, bool)> = vec![
        ("first report", None, &pending, true),
        ("unchanged", Some(&pending), &pending, false),
        (
            "pull progress and runtime id only",
            Some(&pending),
            &pulled,
            false,
        ),
        ("task RUNNING", Some(&pulled), &running, true),
        ("container exit code", Some(&running), &side_exit, true),
        ("checker started", Some(&running), &checking, true),
        ("HEALTHY", Some(&checking), &healthy, true),
        ("UNHEALTHY", Some(&healthy), &unhealthy, true),
        ("same health", Some(&healthy), &healthy, false),
        ("STOPPED", Some(&side_exit), &stopped_a, true),
        (
            "any change once STOPPED",
            Some(&stopped_a),
            &stopped_b,
            true,
        ),
    ];
    for (name, last, current, expected) in cases {
        assert_eq!(report_due(last, current), expected, "{name}");
    }
}
