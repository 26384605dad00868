//! Table-driven tests of the task definition module's public functions:
//! RegisterTaskDefinition validation (invalid and valid requests), rendering,
//! and RunTask overrides.
#![allow(clippy::type_complexity)]

use serde_json::{json, Value};

use super::*;
use crate::error::ErrorKind;

fn container(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "busybox:latest", "memory": 64});
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    c
}

fn taskdef(extra: Value) -> Value {
    let mut t = json!({"family": "web", "containerDefinitions": [container(json!({}))]});
    if let (Value::Object(t), Value::Object(extra)) = (&mut t, extra) {
        for (k, v) in extra {
            if v.is_null() {
                t.remove(&k);
            } else {
                t.insert(k, v);
            }
        }
    }
    t
}

fn with_containers(containers: Vec<Value>, extra: Value) -> Value {
    let mut t = taskdef(extra);
    t["containerDefinitions"] = Value::Array(containers);
    t
}

use ErrorKind::{
    ClientException as Client, InvalidParameterException as Invalid, SerializationException as Ser,
};

#[test]
fn invalid_registrations_answer_as_ecs_does() {
    let big = "x".repeat(70_000);
    let c = |extra: Value| container(extra);
    let named = |name: &str, extra: Value| {
        let mut v = container(extra);
        v["name"] = json!(name);
        v
    };
    // (row id, request, expected __type, message fragment)
    let rows: Vec<(&str, Value, ErrorKind, &str)> = vec![
        // --- protocol level
        ("body-array", json!([]), Ser, "Start of list"),
        ("body-string", json!("web"), Ser, "RegisterTaskDefinitionRequest"),
        ("family-number", taskdef(json!({"family": 123})), Ser, "TruncatingBigNumber can not be converted to an String"),
        ("containers-object", taskdef(json!({"containerDefinitions": {"name": "a"}})), Ser, "Start of structure or map"),
        ("container-memory-string", with_containers(vec![c(json!({"memory": "32"}))], json!({})), Ser, "STRING_VALUE can not be converted to an Integer"),
        ("container-essential-string", with_containers(vec![c(json!({"essential": "yes"}))], json!({})), Ser, "STRING_VALUE can not be converted to a Boolean"),
        ("container-memory-float", with_containers(vec![c(json!({"memory": 64.5}))], json!({})), Ser, "NUMBER_VALUE can not be converted to an Integer"),
        ("command-not-list", with_containers(vec![c(json!({"command": "echo hi"}))], json!({})), Ser, "STRING_VALUE can not be converted to a List"),
        ("env-value-number", with_containers(vec![c(json!({"environment": [{"name": "A", "value": 1}]}))], json!({})), Ser, "TruncatingBigNumber"),
        ("labels-list", with_containers(vec![c(json!({"dockerLabels": ["a"]}))], json!({})), Ser, "Start of list"),
        ("task-cpu-number", taskdef(json!({"cpu": 256})), Ser, "can not be converted to an String"),
        ("tags-object", taskdef(json!({"tags": {"key": "a"}})), Ser, "Start of structure or map"),
        // --- model constraints
        ("missing-family", json!({"containerDefinitions": [container(json!({}))]}), Client, "Value null at 'family'"),
        ("missing-containers", json!({"family": "web"}), Client, "Value null at 'containerDefinitions'"),
        ("network-mode-unknown", taskdef(json!({"networkMode": "bogus"})), Client, "Member must satisfy enum value set: [bridge, host, awsvpc, none]"),
        ("compat-unknown", taskdef(json!({"requiresCompatibilities": ["MOON"]})), Client, "requiresCompatibilities.1.member"),
        ("protocol-sctp", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "protocol": "sctp"}]}))], json!({})), Client, "[tcp, udp]"),
        ("ipc-mode-unknown", taskdef(json!({"ipcMode": "shared"})), Client, "[host, task, none]"),
        ("pid-mode-unknown", taskdef(json!({"pidMode": "none"})), Client, "[host, task]"),
        ("log-driver-unknown", with_containers(vec![c(json!({"logConfiguration": {"logDriver": "loki"}}))], json!({})), Client, "json-file"),
        ("ulimit-name-unknown", with_containers(vec![c(json!({"ulimits": [{"name": "files", "softLimit": 1, "hardLimit": 1}]}))], json!({})), Client, "nofile"),
        ("ulimit-missing-soft", with_containers(vec![c(json!({"ulimits": [{"name": "nofile", "hardLimit": 1}]}))], json!({})), Client, "ulimits.1.member.softLimit"),
        ("depends-condition-unknown", with_containers(vec![c(json!({})), named("b", json!({"dependsOn": [{"containerName": "app", "condition": "READY"}]}))], json!({})), Client, "[START, COMPLETE, SUCCESS, HEALTHY]"),
        ("health-check-no-command", with_containers(vec![c(json!({"healthCheck": {"interval": 10}}))], json!({})), Client, "healthCheck.command"),
        ("log-config-no-driver", with_containers(vec![c(json!({"logConfiguration": {"options": {}}}))], json!({})), Client, "logConfiguration.logDriver"),
        // --- size and tags
        ("request-too-large", with_containers(vec![c(json!({"command": [big]}))], json!({})), Client, "Max allowed length is 65536 bytes."),
        ("tag-aws-prefix", taskdef(json!({"tags": [{"key": "aws:x", "value": "1"}]})), Invalid, "reserved"),
        ("tag-duplicate", taskdef(json!({"tags": [{"key": "a"}, {"key": "a"}]})), Invalid, "Duplicate tag key"),
        // --- family and names
        ("family-empty", taskdef(json!({"family": ""})), Client, "Family should not be null or empty."),
        ("family-slash", taskdef(json!({"family": "a/b"})), Client, "invalid characters"),
        ("family-256", taskdef(json!({"family": "f".repeat(256)})), Client, "too long"),
        ("containers-empty", taskdef(json!({"containerDefinitions": []})), Client, "Container list cannot be empty."),
        ("containers-11", with_containers((0..11).map(|i| named(&format!("c{i}"), json!({})) ).collect(), json!({})), Client, "at most 10 containers"),
        ("container-missing-name", with_containers(vec![c(json!({"name": null}))], json!({})), Client, "Container.name should not be null or empty."),
        ("container-name-dot", with_containers(vec![named("a.b", json!({}))], json!({})), Client, "Container name 'a.b' is invalid"),
        ("container-duplicate", with_containers(vec![c(json!({})), c(json!({}))], json!({})), Client, "Duplicate container name 'app'"),
        ("container-missing-image", with_containers(vec![c(json!({"image": null}))], json!({})), Client, "Container.image should not be null or empty."),
        ("image-space", with_containers(vec![c(json!({"image": "bad image"}))], json!({})), Client, "Container.image contains invalid characters."),
        ("image-dollar", with_containers(vec![c(json!({"image": "$IMAGE_NAME"}))], json!({})), Client, "invalid characters"),
        ("image-too-long", with_containers(vec![c(json!({"image": "a".repeat(256)}))], json!({})), Client, "at most 255"),
        ("image-bad-digest", with_containers(vec![c(json!({"image": "busybox@sha256:abc"}))], json!({})), Client, "64 hexadecimal"),
        ("no-essential", with_containers(vec![c(json!({"essential": false}))], json!({})), Client, "at least one essential container"),
        // --- cpu and memory
        ("memory-0", with_containers(vec![c(json!({"memory": 0}))], json!({})), Client, "Invalid 'memory' setting for container 'app'. The minimum is 6 MiB."),
        ("memory-negative", with_containers(vec![c(json!({"memory": -1}))], json!({})), Client, "Invalid 'memory' setting"),
        ("memory-5", with_containers(vec![c(json!({"memory": 5}))], json!({})), Client, "minimum is 6 MiB"),
        ("reservation-5", with_containers(vec![c(json!({"memory": null, "memoryReservation": 5}))], json!({})), Client, "Invalid 'memoryReservation' setting"),
        ("reservation-above-memory", with_containers(vec![c(json!({"memory": 32, "memoryReservation": 64}))], json!({})), Client, "'memory' must be greater than or equal to 'memoryReservation'"),
        ("no-memory-anywhere", with_containers(vec![c(json!({"memory": null}))], json!({})), Client, "Invalid setting for container 'app'. At least one of 'memory' or 'memoryReservation' must be specified."),
        ("container-cpu-negative", with_containers(vec![c(json!({"cpu": -5}))], json!({})), Client, "Invalid 'cpu' setting for container 'app'"),
        ("task-cpu-abc", taskdef(json!({"cpu": "abc"})), Client, "Invalid 'cpu' setting for task."),
        ("task-memory-lots", taskdef(json!({"memory": "lots"})), Client, "Invalid 'memory' setting for task."),
        ("task-cpu-too-small", taskdef(json!({"cpu": "64"})), Client, "between 128 and 196608"),
        ("container-memory-above-task", with_containers(vec![c(json!({"memory": 1024}))], json!({"memory": "512"})), Client, "more than the task memory of 512 MiB"),
        ("containers-sum-above-task-memory", with_containers(vec![c(json!({"memory": 300})), named("b", json!({"memory": 300}))], json!({"memory": "512"})), Client, "reserve 600 MiB in total"),
        ("containers-sum-above-task-cpu", with_containers(vec![c(json!({"cpu": 200})), named("b", json!({"cpu": 100}))], json!({"cpu": "256"})), Client, "reserve 300 CPU units in total"),
        // --- ports and networking
        ("container-port-70000", with_containers(vec![c(json!({"portMappings": [{"containerPort": 70000}]}))], json!({})), Client, "containerPort 70000 must be between 1 and 65535"),
        ("container-port-0", with_containers(vec![c(json!({"portMappings": [{"containerPort": 0}]}))], json!({})), Client, "containerPort 0 must be between 1 and 65535"),
        ("host-port-70000", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "hostPort": 70000}]}))], json!({"networkMode": "host"})), Client, "hostPort 70000 must be between 0 and 65535"),
        ("host-port-negative", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "hostPort": -1}]}))], json!({})), Client, "hostPort -1"),
        ("host-mode-mismatch", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "hostPort": 8080}]}))], json!({"networkMode": "host"})), Client, "When networkMode=host, the host ports and container ports in port mappings must match."),
        ("none-mode-ports", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80}]}))], json!({"networkMode": "none"})), Client, "networkMode=none"),
        ("port-mapping-without-port", with_containers(vec![c(json!({"portMappings": [{"protocol": "tcp"}]}))], json!({})), Client, "must specify containerPort or containerPortRange"),
        ("duplicate-host-port", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "hostPort": 8080}]})), named("b", json!({"portMappings": [{"containerPort": 81, "hostPort": 8080}]}))], json!({})), Client, "Host port 8080/tcp is used by more than one"),
        ("duplicate-container-port-awsvpc", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80}]})), named("b", json!({"portMappings": [{"containerPort": 80}]}))], json!({"networkMode": "awsvpc"})), Client, "share one network namespace"),
        ("port-range-bad", with_containers(vec![c(json!({"portMappings": [{"containerPortRange": "9000-8000"}]}))], json!({})), Client, "invalid containerPortRange"),
        ("port-range-host-mode", with_containers(vec![c(json!({"portMappings": [{"containerPortRange": "8000-9000"}]}))], json!({"networkMode": "host"})), Client, "requires networkMode bridge or awsvpc"),
        ("port-range-overlap", with_containers(vec![c(json!({"portMappings": [{"containerPortRange": "8000-9000"}, {"containerPort": 8500}]}))], json!({})), Client, "inside a containerPortRange"),
        ("links-in-awsvpc", with_containers(vec![c(json!({})), named("b", json!({"links": ["app"]}))], json!({"networkMode": "awsvpc"})), Client, "Links are not supported when networkMode=awsvpc"),
        ("link-to-missing", with_containers(vec![c(json!({"links": ["db:db"]}))], json!({})), Client, "links to 'db'"),
        ("link-to-self", with_containers(vec![c(json!({"links": ["app"]}))], json!({})), Client, "links to 'app'"),
        ("hostname-awsvpc", with_containers(vec![c(json!({"hostname": "h"}))], json!({"networkMode": "awsvpc"})), Client, "hostname is not supported"),
        ("extra-hosts-awsvpc", with_containers(vec![c(json!({"extraHosts": [{"hostname": "h", "ipAddress": "10.0.0.1"}]}))], json!({"networkMode": "awsvpc"})), Client, "extraHosts is not supported"),
        // --- dependencies, volumes
        ("depends-on-unknown", with_containers(vec![c(json!({"dependsOn": [{"containerName": "ghost", "condition": "START"}]}))], json!({})), Client, "depends on container 'ghost', which does not exist"),
        ("depends-on-self", with_containers(vec![c(json!({"dependsOn": [{"containerName": "app", "condition": "START"}]}))], json!({})), Client, "cannot depend on itself"),
        ("depends-cycle", with_containers(vec![c(json!({"dependsOn": [{"containerName": "b", "condition": "START"}]})), named("b", json!({"dependsOn": [{"containerName": "app", "condition": "START"}]}))], json!({})), Client, "cycle: app -> b -> app"),
        ("depends-complete-on-essential", with_containers(vec![c(json!({})), named("b", json!({"dependsOn": [{"containerName": "app", "condition": "COMPLETE"}]}))], json!({})), Client, "cannot be set on an essential container"),
        ("depends-healthy-without-check", with_containers(vec![c(json!({})), named("b", json!({"dependsOn": [{"containerName": "app", "condition": "HEALTHY"}]}))], json!({})), Client, "has no healthCheck"),
        ("mount-unknown-volume", with_containers(vec![c(json!({"mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}))], json!({})), Client, "unknown volume 'data'"),
        ("mount-no-path", with_containers(vec![c(json!({"mountPoints": [{"sourceVolume": "data"}]}))], json!({"volumes": [{"name": "data"}]})), Client, "must specify containerPath"),
        ("volumes-from-unknown", with_containers(vec![c(json!({"volumesFrom": [{"sourceContainer": "ghost"}]}))], json!({})), Client, "sourceContainer 'ghost'"),
        ("volume-duplicate", taskdef(json!({"volumes": [{"name": "v"}, {"name": "v"}]})), Client, "Duplicate volume name 'v'"),
        ("volume-no-name", taskdef(json!({"volumes": [{"host": {}}]})), Client, "Volume.name should not be null or empty."),
        ("volume-two-kinds", taskdef(json!({"volumes": [{"name": "v", "host": {}, "dockerVolumeConfiguration": {}}]})), Client, "only one of"),
        // --- per-container settings
        ("health-interval-4", with_containers(vec![c(json!({"healthCheck": {"command": ["CMD", "true"], "interval": 4}}))], json!({})), Client, "interval 4 must be between 5 and 300"),
        ("health-timeout-61", with_containers(vec![c(json!({"healthCheck": {"command": ["CMD", "true"], "timeout": 61}}))], json!({})), Client, "timeout 61 must be between 2 and 60"),
        ("health-retries-0", with_containers(vec![c(json!({"healthCheck": {"command": ["CMD", "true"], "retries": 0}}))], json!({})), Client, "retries 0 must be between 1 and 10"),
        ("health-start-301", with_containers(vec![c(json!({"healthCheck": {"command": ["CMD", "true"], "startPeriod": 301}}))], json!({})), Client, "startPeriod 301 must be between 0 and 300"),
        ("health-empty-command", with_containers(vec![c(json!({"healthCheck": {"command": []}}))], json!({})), Client, "command must not be empty"),
        ("stop-timeout-negative", with_containers(vec![c(json!({"stopTimeout": -1}))], json!({})), Client, "stopTimeout must be 0 or greater"),
        ("env-empty-name", with_containers(vec![c(json!({"environment": [{"value": "x"}]}))], json!({})), Client, "invalid environment variable name"),
        ("env-name-equals", with_containers(vec![c(json!({"environment": [{"name": "A=B", "value": "x"}]}))], json!({})), Client, "must not contain '='"),
        ("env-file-extension", with_containers(vec![c(json!({"environmentFiles": [{"type": "s3", "value": "arn:aws:s3:::b/f.txt"}]}))], json!({})), Client, ".env file extension"),
        ("ulimit-soft-above-hard", with_containers(vec![c(json!({"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]}))], json!({})), Client, "softLimit 10 is greater than hardLimit 5"),
        ("ulimit-duplicate", with_containers(vec![c(json!({"ulimits": [{"name": "nofile", "softLimit": 1, "hardLimit": 1}, {"name": "nofile", "softLimit": 2, "hardLimit": 2}]}))], json!({})), Client, "duplicate ulimit 'nofile'"),
        ("capability-unknown", with_containers(vec![c(json!({"linuxParameters": {"capabilities": {"add": ["SYS_MAGIC"]}}}))], json!({})), Client, "unknown kernel capability 'SYS_MAGIC'"),
        ("tmpfs-relative", with_containers(vec![c(json!({"linuxParameters": {"tmpfs": [{"containerPath": "tmp", "size": 10}]}}))], json!({})), Client, "absolute path"),
        ("swappiness-101", with_containers(vec![c(json!({"linuxParameters": {"swappiness": 101}}))], json!({})), Client, "swappiness must be between 0 and 100"),
        ("gpu-zero", with_containers(vec![c(json!({"resourceRequirements": [{"type": "GPU", "value": "0"}]}))], json!({})), Client, "positive integer"),
        ("accelerator-unknown", with_containers(vec![c(json!({"resourceRequirements": [{"type": "InferenceAccelerator", "value": "dev1"}]}))], json!({})), Client, "does not match a deviceName"),
        ("sysctl-net-host-mode", with_containers(vec![c(json!({"systemControls": [{"namespace": "net.core.somaxconn", "value": "1"}]}))], json!({"networkMode": "host"})), Client, "not supported when networkMode=host"),
        ("restart-period-30", with_containers(vec![c(json!({"restartPolicy": {"enabled": true, "restartAttemptPeriod": 30}}))], json!({})), Client, "between 60 and 1800"),
        ("firelens-without-router", with_containers(vec![c(json!({"logConfiguration": {"logDriver": "awsfirelens"}}))], json!({})), Client, "no container has a firelensConfiguration"),
        ("same-port-two-protocols", with_containers(vec![c(json!({"portMappings": [{"containerPort": 53}, {"containerPort": 53, "protocol": "udp"}]}))], json!({})), Client, "You can't expose the same container port for multiple protocols."),
        ("port-name-uppercase", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "name": "Web"}]}))], json!({})), Client, "invalid port mapping name 'Web'"),
        ("port-name-duplicate", with_containers(vec![c(json!({"portMappings": [{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]}))], json!({})), Client, "duplicate port mapping name 'web'"),
        ("awslogs-datetime-and-multiline", with_containers(vec![c(json!({"logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-datetime-format": "%Y", "awslogs-multiline-pattern": "^x"}}}))], json!({})), Client, "cannot both be configured"),
        ("efs-iam-without-tls", taskdef(json!({"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "fs-1", "authorizationConfig": {"iam": "ENABLED"}}}]})), Client, "transit encryption must be turned on"),
        ("efs-access-point-root", taskdef(json!({"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "fs-1", "rootDirectory": "/data", "authorizationConfig": {"accessPointId": "fsap-1"}}}]})), Client, "rootDirectory must be omitted"),
        ("credential-specs-two", with_containers(vec![c(json!({"credentialSpecs": ["a", "b"]}))], json!({})), Client, "at most one ARN"),
        ("security-option-bogus", with_containers(vec![c(json!({"dockerSecurityOptions": ["seccomp:unconfined"]}))], json!({})), Client, "invalid dockerSecurityOptions value"),
        ("tmpfs-option-bogus", with_containers(vec![c(json!({"linuxParameters": {"tmpfs": [{"containerPath": "/run", "size": 1, "mountOptions": ["turbo"]}]}}))], json!({})), Client, "invalid tmpfs mount option 'turbo'"),
        ("accelerator-unreferenced", taskdef(json!({"inferenceAccelerators": [{"deviceName": "dev1", "deviceType": "eia2.medium"}]})), Client, "must be referenced"),
        ("fargate-firelens-s3", with_containers(vec![c(json!({"firelensConfiguration": {"type": "fluentbit", "options": {"config-file-type": "s3", "config-file-value": "arn:aws:s3:::b/c.conf"}}}))], json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512"})), Client, "only support the file FireLens"),
        ("two-firelens-routers", with_containers(vec![c(json!({"firelensConfiguration": {"type": "fluentbit"}})), named("b", json!({"firelensConfiguration": {"type": "fluentd"}}))], json!({})), Client, "Only one container"),
        // --- task level
        ("proxy-unknown-container", taskdef(json!({"networkMode": "awsvpc", "proxyConfiguration": {"type": "APPMESH", "containerName": "envoy"}})), Client, "containerName 'envoy'"),
        ("ephemeral-20", taskdef(json!({"ephemeralStorage": {"sizeInGiB": 20}})), Client, "between 21 and 200"),
        ("placement-11", taskdef(json!({"placementConstraints": (0..11).map(|_| json!({"type": "memberOf", "expression": "attribute:a == b"})).collect::<Vec<_>>()})), Client, "Too many placement constraints: 11"),
        ("placement-no-expression", taskdef(json!({"placementConstraints": [{"type": "memberOf"}]})), Client, "must have an expression"),
        // --- Fargate
        ("fargate-bridge", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512"})), Client, "Fargate only supports network mode 'awsvpc'."),
        ("fargate-no-cpu", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "memory": "512"})), Client, "Fargate requires that 'cpu' be defined at the task level."),
        ("fargate-no-memory", with_containers(vec![c(json!({"memory": null}))], json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256"})), Client, "At least one of 'memory' or 'memoryReservation'"),
        ("fargate-bad-size", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "4096"})), Client, "No Fargate configuration exists for given values: 256 CPU, 4096 memory."),
        ("fargate-privileged", with_containers(vec![c(json!({"privileged": true}))], json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512"})), Client, "privileged is not supported"),
        ("fargate-log-driver", with_containers(vec![c(json!({"logConfiguration": {"logDriver": "json-file"}}))], json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512"})), Client, "Must be one of [awslogs,splunk,awsfirelens]"),
        ("fargate-stop-timeout-121", with_containers(vec![c(json!({"stopTimeout": 121}))], json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512"})), Client, "between 2 and 120"),
        ("fargate-docker-volume", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512", "volumes": [{"name": "v", "dockerVolumeConfiguration": {"scope": "task"}}]})), Client, "Docker volumes are not supported"),
        ("fargate-placement", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512", "placementConstraints": [{"type": "memberOf", "expression": "attribute:x == y"}]})), Client, "Placement constraints are not supported"),
        ("fargate-pid-host", taskdef(json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256", "memory": "512", "pidMode": "host"})), Client, "pidMode 'host'"),
    ];
    assert!(
        rows.len() >= 40,
        "the table must keep at least 40 invalid rows"
    );
    let mut ids = std::collections::BTreeSet::new();
    for (id, body, kind, fragment) in rows {
        assert!(ids.insert(id), "duplicate row id {id}");
        match validate_register(&body) {
            Ok(r) => panic!("{id}: accepted, expected {kind}: {:?}", r.definition),
            Err(e) => {
                assert_eq!(e.kind, kind, "{id}: {}", e.message);
                assert!(
                    e.message.contains(fragment),
                    "{id}: message {:?} lacks {fragment:?}",
                    e.message
                );
            }
        }
    }
}

#[test]
fn valid_registrations_are_accepted_with_their_requirements() {
    let c = |extra: Value| container(extra);
    let named = |name: &str, extra: Value| {
        let mut v = container(extra);
        v["name"] = json!(name);
        v
    };
    let pm = |cp: u16, hp: Option<u16>, proto: &str| berth_api::PortMapping {
        container_port: Some(cp),
        host_port: hp,
        protocol: Some(proto.to_string()),
    };
    // (row id, request, cpu, memory MiB, network mode, static ports)
    let rows: Vec<(&str, Value, u32, u32, &str, Vec<berth_api::PortMapping>)> = vec![
        ("minimal", taskdef(json!({})), 0, 64, "bridge", vec![]),
        (
            "reservation-only",
            with_containers(
                vec![c(
                    json!({"memory": null, "memoryReservation": 32, "cpu": 128}),
                )],
                json!({}),
            ),
            128,
            32,
            "bridge",
            vec![],
        ),
        (
            "reservation-counts-over-memory",
            with_containers(
                vec![
                    c(json!({"memory": 128, "memoryReservation": 32})),
                    named("b", json!({"memory": 16})),
                ],
                json!({}),
            ),
            0,
            48,
            "bridge",
            vec![],
        ),
        (
            "reservation-equal-memory",
            with_containers(
                vec![c(json!({"memory": 64, "memoryReservation": 64}))],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "task-level-sizes",
            with_containers(
                vec![c(json!({"memory": null, "cpu": 100}))],
                json!({"cpu": "1 vCPU", "memory": "1 GB"}),
            ),
            1024,
            1024,
            "bridge",
            vec![],
        ),
        (
            "bridge-dynamic-and-static",
            with_containers(
                vec![c(
                    json!({"portMappings": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 8443}, {"containerPort": 53, "hostPort": 5353, "protocol": "udp"}, {"containerPort": 81, "hostPort": 0}]}),
                )],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![pm(443, Some(8443), "tcp"), pm(53, Some(5353), "udp")],
        ),
        (
            "host-mode-ports",
            with_containers(
                vec![c(
                    json!({"portMappings": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 9090, "protocol": "udp"}]}),
                )],
                json!({"networkMode": "host"}),
            ),
            0,
            64,
            "host",
            vec![pm(8080, Some(8080), "tcp"), pm(9090, Some(9090), "udp")],
        ),
        (
            "awsvpc-no-host-ports",
            with_containers(
                vec![c(json!({"portMappings": [{"containerPort": 80}]}))],
                json!({"networkMode": "awsvpc"}),
            ),
            0,
            64,
            "awsvpc",
            vec![],
        ),
        (
            "awsvpc-other-host-port-accepted",
            with_containers(
                vec![c(
                    json!({"portMappings": [{"containerPort": 5601, "hostPort": 80}]}),
                )],
                json!({"networkMode": "awsvpc"}),
            ),
            0,
            64,
            "awsvpc",
            vec![],
        ),
        (
            "none-mode",
            taskdef(json!({"networkMode": "none"})),
            0,
            64,
            "none",
            vec![],
        ),
        (
            "same-container-port-in-bridge",
            with_containers(
                vec![
                    c(json!({"portMappings": [{"containerPort": 80}]})),
                    named("b", json!({"portMappings": [{"containerPort": 80}]})),
                ],
                json!({}),
            ),
            0,
            128,
            "bridge",
            vec![],
        ),
        (
            "tcp-and-udp-host",
            with_containers(
                vec![c(
                    json!({"portMappings": [{"containerPort": 53}, {"containerPort": 54, "protocol": "udp"}]}),
                )],
                json!({"networkMode": "host"}),
            ),
            0,
            64,
            "host",
            vec![pm(53, Some(53), "tcp"), pm(54, Some(54), "udp")],
        ),
        (
            "named-port-mappings",
            with_containers(
                vec![c(
                    json!({"portMappings": [{"containerPort": 80, "name": "web_http-1", "appProtocol": "http"}]}),
                )],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "accelerator-referenced",
            with_containers(
                vec![c(
                    json!({"resourceRequirements": [{"type": "InferenceAccelerator", "value": "dev1"}, {"type": "GPU", "value": "1"}]}),
                )],
                json!({"inferenceAccelerators": [{"deviceName": "dev1", "deviceType": "eia2.medium"}]}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "security-options",
            with_containers(
                vec![c(
                    json!({"dockerSecurityOptions": ["no-new-privileges", "apparmor:docker-default", "label:type:svirt_apache_t"], "linuxParameters": {"tmpfs": [{"containerPath": "/run", "size": 16, "mountOptions": ["nosuid", "mode=1777"]}]}}),
                )],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "links-and-deps",
            with_containers(
                vec![
                    named(
                        "db",
                        json!({"essential": false, "healthCheck": {"command": ["CMD", "true"]}}),
                    ),
                    c(
                        json!({"links": ["db:database"], "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]}),
                    ),
                ],
                json!({}),
            ),
            0,
            128,
            "bridge",
            vec![],
        ),
        (
            "complete-on-non-essential",
            with_containers(
                vec![
                    named("init", json!({"essential": false})),
                    c(json!({"dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]})),
                ],
                json!({}),
            ),
            0,
            128,
            "bridge",
            vec![],
        ),
        (
            "volumes-and-mounts",
            with_containers(
                vec![
                    c(
                        json!({"mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": true}]}),
                    ),
                    named("b", json!({"volumesFrom": [{"sourceContainer": "app"}]})),
                ],
                json!({"volumes": [{"name": "data", "host": {"sourcePath": "/srv"}}]}),
            ),
            0,
            128,
            "bridge",
            vec![],
        ),
        (
            "fargate",
            with_containers(
                vec![c(json!({"memory": null}))],
                json!({"requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "0.25 vCPU", "memory": "0.5GB"}),
            ),
            256,
            512,
            "awsvpc",
            vec![],
        ),
        (
            "image-digest",
            with_containers(
                vec![c(
                    json!({"image": format!("registry.local:5000/team/app@sha256:{}", "a".repeat(64))}),
                )],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "windows-healthcheck-command",
            with_containers(
                vec![c(
                    json!({"healthCheck": {"command": ["powershell", "-c", "exit 0"]}}),
                )],
                json!({}),
            ),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "tags",
            taskdef(json!({"tags": [{"key": "team", "value": "blue"}]})),
            0,
            64,
            "bridge",
            vec![],
        ),
        (
            "ten-containers",
            with_containers(
                (0..10)
                    .map(|i| named(&format!("c{i}"), json!({})))
                    .collect(),
                json!({}),
            ),
            0,
            640,
            "bridge",
            vec![],
        ),
    ];
    for (id, body, cpu, memory, mode, ports) in rows {
        let reg = validate_register(&body).unwrap_or_else(|e| panic!("{id}: rejected: {e}"));
        assert_eq!(reg.family, "web", "{id}");
        assert_eq!(reg.requirements.cpu, cpu, "{id}: cpu");
        assert_eq!(reg.requirements.memory_mib, memory, "{id}: memory");
        assert_eq!(reg.requirements.network_mode, mode, "{id}: network mode");
        assert_eq!(reg.requirements.ports, ports, "{id}: ports");
        assert!(
            !reg.definition.contains_key("tags"),
            "{id}: tags are not part of the definition"
        );
        assert_subset(
            &body_without_tags(&body),
            &Value::Object(reg.definition.clone()),
            id,
        );
    }
}

fn body_without_tags(body: &Value) -> Value {
    let mut b = body.clone();
    if let Value::Object(m) = &mut b {
        m.remove("tags");
    }
    b
}

/// Every member of `sent` is in `got`, unchanged (objects in `got` may have more).
pub(crate) fn assert_subset(sent: &Value, got: &Value, ctx: &str) {
    fn walk(sent: &Value, got: &Value, path: &str, ctx: &str) {
        match (sent, got) {
            (Value::Object(s), Value::Object(g)) => {
                for (k, v) in s {
                    match g.get(k) {
                        Some(gv) => walk(v, gv, &format!("{path}.{k}"), ctx),
                        None => panic!("{ctx}: {path}.{k} missing"),
                    }
                }
            }
            (Value::Array(s), Value::Array(g)) => {
                assert_eq!(s.len(), g.len(), "{ctx}: {path} length");
                for (i, (sv, gv)) in s.iter().zip(g).enumerate() {
                    walk(sv, gv, &format!("{path}[{i}]"), ctx);
                }
            }
            _ => assert_eq!(sent, got, "{ctx}: {path}"),
        }
    }
    walk(sent, got, "", ctx);
}

#[test]
fn tags_are_returned_separately() {
    let reg = validate_register(&taskdef(
        json!({"tags": [{"key": "team", "value": "blue"}, {"key": "env"}]}),
    ))
    .expect("valid");
    assert_eq!(
        reg.tags,
        vec![
            Tag {
                key: "team".into(),
                value: "blue".into()
            },
            Tag {
                key: "env".into(),
                value: String::new()
            }
        ]
    );
}

#[test]
fn stored_definition_echoes_sent_values_and_adds_ecs_defaults() {
    let body = taskdef(json!({
        "cpu": "1 vCPU",
        "memory": "2GB",
        "volumes": [{"name": "v"}],
        "containerDefinitions": [{
            "name": "app", "image": "busybox", "memory": 64,
            "portMappings": [{"containerPort": 80}],
            "healthCheck": {"command": ["CMD", "true"]},
            "command": [], "dnsServers": [],
            "unknownField": "dropped", "links": null
        }]
    }));
    let reg = validate_register(&body).expect("valid");
    let def = Value::Object(reg.definition);
    assert_eq!(def["cpu"], "1 vCPU", "task cpu is echoed as sent");
    assert_eq!(def["memory"], "2GB", "task memory is echoed as sent");
    let c = &def["containerDefinitions"][0];
    assert_eq!(c["command"], json!([]), "empty lists are kept");
    assert_eq!(c["dnsServers"], json!([]));
    assert!(
        c.get("unknownField").is_none(),
        "unmodelled members are not stored"
    );
    assert!(c.get("links").is_none(), "null members are absent");
    assert_eq!(c["cpu"], 0);
    assert_eq!(c["essential"], true);
    assert_eq!(c["environment"], json!([]));
    assert_eq!(c["mountPoints"], json!([]));
    assert_eq!(c["volumesFrom"], json!([]));
    assert_eq!(
        c["portMappings"],
        json!([{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}])
    );
    assert_eq!(
        c["healthCheck"],
        json!({"command": ["CMD", "true"], "interval": 30, "timeout": 5, "retries": 3})
    );
    assert_eq!(def["volumes"], json!([{"name": "v", "host": {}}]));
    assert_eq!(def["placementConstraints"], json!([]));
    assert_eq!(reg.requirements.cpu, 1024);
    assert_eq!(reg.requirements.memory_mib, 2048);
}

#[test]
fn render_returns_everything_sent_plus_metadata() {
    let body = taskdef(
        json!({"networkMode": "awsvpc", "cpu": "256", "memory": "512", "taskRoleArn": "arn:aws:iam::1:role/r"}),
    );
    let reg = validate_register(&body).expect("valid");
    let out = render(
        &reg.definition,
        "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1",
        1,
        "ACTIVE",
        1_700_000_000.5,
        None,
        Some("arn:aws:iam::123456789012:root"),
    );
    assert_subset(&body, &out, "render");
    assert_eq!(out["revision"], 1);
    assert_eq!(out["status"], "ACTIVE");
    assert_eq!(out["registeredBy"], "arn:aws:iam::123456789012:root");
    assert_eq!(
        out["compatibilities"],
        json!(["EC2", "EXTERNAL", "FARGATE"])
    );
    let attrs: Vec<&str> = out["requiresAttributes"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(
        attrs,
        vec![
            "com.amazonaws.ecs.capability.docker-remote-api.1.18",
            "com.amazonaws.ecs.capability.task-iam-role",
            "ecs.capability.task-eni"
        ]
    );
}

#[test]
fn run_overrides_apply_as_ecs_documents_them() {
    let reg = validate_register(&with_containers(
        vec![
            container(json!({"command": ["sleep", "1"], "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "cpu": 10})),
            {
                let mut b = container(json!({"memory": null, "memoryReservation": 32}));
                b["name"] = json!("side");
                b
            },
        ],
        json!({}),
    ))
    .expect("valid");
    let def = &reg.definition;

    struct Row {
        id: &'static str,
        overrides: Option<Value>,
        /// (container, command, env, cpu, memory, reservation)
        expect: Result<
            Vec<(
                &'static str,
                Option<Vec<&'static str>>,
                Vec<(&'static str, &'static str)>,
                u32,
                Option<u32>,
                Option<u32>,
            )>,
            (ErrorKind, &'static str),
        >,
        requirements: Option<(u32, u32)>,
    }
    let base_app = (
        "app",
        Some(vec!["sleep", "1"]),
        vec![("A", "1"), ("B", "2")],
        10,
        Some(64),
        None,
    );
    let base_side = ("side", None, vec![], 0, None, Some(32));
    let rows = vec![
        Row {
            id: "none",
            overrides: None,
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "null",
            overrides: Some(Value::Null),
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "empty",
            overrides: Some(json!({})),
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "empty-container-override",
            overrides: Some(json!({"containerOverrides": [{}]})),
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "command-env-merge",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "command": ["echo", "hi"], "environment": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}),
            ),
            expect: Ok(vec![
                (
                    "app",
                    Some(vec!["echo", "hi"]),
                    vec![("A", "1"), ("B", "20"), ("C", "3")],
                    10,
                    Some(64),
                    None,
                ),
                base_side.clone(),
            ]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "cpu-memory",
            overrides: Some(
                json!({"containerOverrides": [{"name": "side", "cpu": 512, "memory": 256, "memoryReservation": 128}]}),
            ),
            expect: Ok(vec![
                base_app.clone(),
                ("side", None, vec![], 512, Some(256), Some(128)),
            ]),
            requirements: Some((522, 192)),
        },
        Row {
            id: "task-level",
            overrides: Some(json!({"cpu": "2 vCPU", "memory": "1GB"})),
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((2048, 1024)),
        },
        Row {
            id: "unknown-container",
            overrides: Some(json!({"containerOverrides": [{"name": "ghost", "command": ["x"]}]})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "Override for container named ghost is not a container in the TaskDefinition.",
            )),
            requirements: None,
        },
        Row {
            id: "nameless",
            overrides: Some(json!({"containerOverrides": [{"command": ["x"]}]})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "name must be specified",
            )),
            requirements: None,
        },
        Row {
            id: "duplicate",
            overrides: Some(json!({"containerOverrides": [{"name": "app"}, {"name": "app"}]})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "More than one override",
            )),
            requirements: None,
        },
        Row {
            id: "reservation-above-memory",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "memoryReservation": 128}]}),
            ),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "'memory' must be greater than or equal to 'memoryReservation'",
            )),
            requirements: None,
        },
        Row {
            id: "memory-too-small",
            overrides: Some(json!({"containerOverrides": [{"name": "app", "memory": 2}]})),
            expect: Err((ErrorKind::InvalidParameterException, "minimum is 6 MiB")),
            requirements: None,
        },
        Row {
            id: "cpu-negative",
            overrides: Some(json!({"containerOverrides": [{"name": "app", "cpu": -1}]})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "Invalid 'cpu' override",
            )),
            requirements: None,
        },
        Row {
            id: "task-memory-below-containers",
            overrides: Some(json!({"memory": "64"})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "reserve 96 MiB in total",
            )),
            requirements: None,
        },
        Row {
            id: "task-cpu-garbage",
            overrides: Some(json!({"cpu": "lots"})),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "Invalid 'cpu' setting for task.",
            )),
            requirements: None,
        },
        Row {
            id: "command-wrong-type",
            overrides: Some(json!({"containerOverrides": [{"name": "app", "command": "echo"}]})),
            expect: Err((
                ErrorKind::SerializationException,
                "STRING_VALUE can not be converted to a List",
            )),
            requirements: None,
        },
        Row {
            id: "overrides-not-object",
            overrides: Some(json!([])),
            expect: Err((ErrorKind::SerializationException, "Start of list")),
            requirements: None,
        },
        Row {
            id: "too-long",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "command": ["x".repeat(9000)]}]}),
            ),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "Container Overrides length must be at most 8192",
            )),
            requirements: None,
        },
        Row {
            id: "gpu-override-zero",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "resourceRequirements": [{"type": "GPU", "value": "0"}]}]}),
            ),
            expect: Err((
                ErrorKind::InvalidParameterException,
                "must be a positive integer",
            )),
            requirements: None,
        },
        Row {
            id: "env-file-override-extension",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "environmentFiles": [{"type": "s3", "value": "arn:aws:s3:::b/x.txt"}]}]}),
            ),
            expect: Err((ErrorKind::InvalidParameterException, ".env file extension")),
            requirements: None,
        },
        Row {
            id: "env-file-and-gpu-accepted",
            overrides: Some(
                json!({"containerOverrides": [{"name": "app", "environmentFiles": [{"type": "s3", "value": "arn:aws:s3:::b/x.env"}], "resourceRequirements": [{"type": "GPU", "value": "1"}]}]}),
            ),
            expect: Ok(vec![base_app.clone(), base_side.clone()]),
            requirements: Some((10, 96)),
        },
        Row {
            id: "ephemeral-small",
            overrides: Some(json!({"ephemeralStorage": {"sizeInGiB": 5}})),
            expect: Err((ErrorKind::InvalidParameterException, "between 21 and 200")),
            requirements: None,
        },
    ];
    for row in rows {
        let got = containers_for_run(def, row.overrides.as_ref());
        match (&row.expect, got) {
            (Ok(expected), Ok((specs, req))) => {
                assert_eq!(specs.len(), expected.len(), "{}", row.id);
                for (spec, (name, cmd, env, cpu, mem, res)) in specs.iter().zip(expected) {
                    assert_eq!(spec.name, *name, "{}", row.id);
                    assert_eq!(
                        spec.command,
                        cmd.as_ref()
                            .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                        "{}: {name} command",
                        row.id
                    );
                    let got_env: Vec<(&str, &str)> = spec
                        .environment
                        .iter()
                        .map(|kv| (kv.name.as_str(), kv.value.as_str()))
                        .collect();
                    assert_eq!(&got_env, env, "{}: {name} env", row.id);
                    assert_eq!(spec.cpu, *cpu, "{}: {name} cpu", row.id);
                    assert_eq!(spec.memory, *mem, "{}: {name} memory", row.id);
                    assert_eq!(
                        spec.memory_reservation, *res,
                        "{}: {name} reservation",
                        row.id
                    );
                    assert!(spec.essential, "{}", row.id);
                }
                let (cpu, mem) = row.requirements.expect("requirements given for Ok rows");
                assert_eq!(
                    (req.cpu, req.memory_mib),
                    (cpu, mem),
                    "{}: requirements",
                    row.id
                );
            }
            (Err((kind, fragment)), Err(e)) => {
                assert_eq!(e.kind, *kind, "{}: {}", row.id, e.message);
                assert!(
                    e.message.contains(fragment),
                    "{}: {:?} lacks {fragment:?}",
                    row.id,
                    e.message
                );
            }
            (expected, got) => panic!("{}: expected {expected:?}, got {got:?}", row.id),
        }
    }
}

#[test]
fn run_specs_carry_ports_and_dependencies_for_the_agent() {
    let reg = validate_register(&with_containers(
        vec![
            {
                let mut db = container(json!({"essential": false, "stopTimeout": 5, "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}]}));
                db["name"] = json!("db");
                db
            },
            container(json!({"portMappings": [{"containerPort": 80, "hostPort": 8080}], "dependsOn": [{"containerName": "db", "condition": "START"}], "dockerLabels": {"a": "b"}})),
        ],
        json!({}),
    ))
    .expect("valid");
    let (specs, req) = containers_for_run(&reg.definition, None).expect("runnable");
    assert!(!specs[0].essential);
    assert_eq!(specs[0].stop_timeout, Some(5));
    assert_eq!(specs[0].ulimits[0].hard_limit, 4096);
    assert_eq!(specs[1].port_mappings[0].host_port, Some(8080));
    assert_eq!(specs[1].depends_on[0].container_name, "db");
    assert_eq!(
        specs[1].docker_labels.get("a").map(String::as_str),
        Some("b")
    );
    assert_eq!(req.ports.len(), 1);
    assert_eq!(req.ports[0].host_port, Some(8080));
}
