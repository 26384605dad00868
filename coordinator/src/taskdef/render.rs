//! What ECS adds to a registered task definition: the server defaults it
//! fills in at registration (only where members are absent, so every member a
//! client sent reads back unchanged), the `requiresAttributes` it derives from
//! the features a definition uses, and the launch-type `compatibilities`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::validate::{bool_of, list_of, obj_of, objects_of, str_of, validate_definition};

/// Fills in the members ECS adds when they are absent: per container `cpu: 0`,
/// `essential: true`, empty `portMappings`, `environment`, `mountPoints`,
/// `volumesFrom` and `systemControls`; per port mapping `protocol: "tcp"` and
/// `hostPort` (the container port in host and awsvpc modes, 0 = dynamic in
/// bridge mode); health check `interval: 30`, `timeout: 5`, `retries: 3`; and
/// at task level empty `volumes` and `placementConstraints`, with `host: {}`
/// on a volume that names no configuration (ECS's default volume kind).
pub fn apply_defaults(def: &mut Map<String, Value>, network_mode: &str) {
    if let Some(Value::Array(containers)) = def.get_mut("containerDefinitions") {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            default(c, "cpu", json!(0));
            default(c, "essential", json!(true));
            for key in [
                "portMappings",
                "environment",
                "mountPoints",
                "volumesFrom",
                "systemControls",
            ] {
                default(c, key, json!([]));
            }
            if let Some(Value::Array(mappings)) = c.get_mut("portMappings") {
                for m in mappings.iter_mut().filter_map(Value::as_object_mut) {
                    default(m, "protocol", json!("tcp"));
                    if let Some(cp) = m.get("containerPort").cloned() {
                        let host = match network_mode {
                            "host" | "awsvpc" => cp,
                            _ => json!(0),
                        };
                        default(m, "hostPort", host);
                    }
                }
            }
            if let Some(Value::Object(h)) = c.get_mut("healthCheck") {
                default(h, "interval", json!(30));
                default(h, "timeout", json!(5));
                default(h, "retries", json!(3));
            }
        }
    }
    default(def, "volumes", json!([]));
    default(def, "placementConstraints", json!([]));
    if let Some(Value::Array(volumes)) = def.get_mut("volumes") {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            let configured = [
                "host",
                "dockerVolumeConfiguration",
                "efsVolumeConfiguration",
                "s3filesVolumeConfiguration",
                "fsxWindowsFileServerVolumeConfiguration",
                "configuredAtLaunch",
            ]
            .iter()
            .any(|k| v.contains_key(*k));
            if !configured {
                v.insert("host".to_string(), json!({}));
            }
        }
    }
}

fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if !obj.contains_key(key) {
        obj.insert(key.to_string(), value);
    }
}

const DOCKER_API: &str = "com.amazonaws.ecs.capability.docker-remote-api.";

/// The container-instance attributes a definition requires, as ECS derives
/// them from the features it uses (sorted, without duplicates).
pub fn required_attributes(def: &Map<String, Value>) -> Vec<String> {
    let mut attrs = BTreeSet::new();
    let mut add = |s: String| {
        attrs.insert(s);
    };
    let network_mode = str_of(def, "networkMode").unwrap_or("bridge");
    let execution_role = def.contains_key("executionRoleArn");
    if def.contains_key("taskRoleArn") {
        add("com.amazonaws.ecs.capability.task-iam-role".into());
        if network_mode == "host" {
            add("com.amazonaws.ecs.capability.task-iam-role-network-host".into());
        }
    }
    if network_mode == "awsvpc" {
        add(format!("{DOCKER_API}1.18"));
        add("ecs.capability.task-eni".into());
    }
    if def.contains_key("proxyConfiguration") {
        add("ecs.capability.aws-appmesh".into());
    }
    for v in objects_of(def, "volumes") {
        if let Some(efs) = obj_of(v, "efsVolumeConfiguration") {
            add("ecs.capability.efs".into());
            if efs.contains_key("authorizationConfig")
                || str_of(efs, "transitEncryption") == Some("ENABLED")
            {
                add("ecs.capability.efsAuth".into());
            }
        }
        if let Some(dv) = obj_of(v, "dockerVolumeConfiguration") {
            add(format!(
                "com.amazonaws.ecs.capability.docker-plugin.{}",
                str_of(dv, "driver").unwrap_or("local")
            ));
            add(format!("{DOCKER_API}1.25"));
        }
        if v.contains_key("fsxWindowsFileServerVolumeConfiguration") {
            add("ecs.capability.fsxWindowsFileServer".into());
        }
    }
    for c in objects_of(def, "containerDefinitions") {
        if let Some(log) = obj_of(c, "logConfiguration") {
            let driver = str_of(log, "logDriver").unwrap_or("");
            add(format!(
                "com.amazonaws.ecs.capability.logging-driver.{driver}"
            ));
            add(format!("{DOCKER_API}1.19"));
            if driver == "awslogs" && execution_role {
                add("ecs.capability.execution-role-awslogs".into());
            }
            for s in objects_of(log, "secretOptions") {
                add(format!(
                    "ecs.capability.secrets.{}.bootstrap.log-driver",
                    secret_store(str_of(s, "valueFrom").unwrap_or(""))
                ));
            }
        }
        if let Some(fl) = obj_of(c, "firelensConfiguration") {
            add(format!(
                "ecs.capability.firelens.{}",
                str_of(fl, "type").unwrap_or("")
            ));
            if let Some(kind) = obj_of(fl, "options").and_then(|o| str_of(o, "config-file-type")) {
                add(format!("ecs.capability.firelens.options.config.{kind}"));
            }
        }
        if c.contains_key("memoryReservation") {
            add(format!("{DOCKER_API}1.21"));
        }
        if c.contains_key("dockerLabels") {
            add(format!("{DOCKER_API}1.18"));
        }
        if c.contains_key("healthCheck") {
            add("ecs.capability.container-health-check".into());
            add(format!("{DOCKER_API}1.24"));
        }
        if !list_of(c, "dependsOn").is_empty()
            || c.contains_key("startTimeout")
            || c.contains_key("stopTimeout")
        {
            add("ecs.capability.container-ordering".into());
        }
        for s in objects_of(c, "secrets") {
            add(format!(
                "ecs.capability.secrets.{}.environment-variables",
                secret_store(str_of(s, "valueFrom").unwrap_or(""))
            ));
        }
        if c.contains_key("repositoryCredentials") {
            add(
                "com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager"
                    .into(),
            );
        }
        if str_of(c, "image").is_some_and(|i| i.contains(".dkr.ecr.")) {
            add("com.amazonaws.ecs.capability.ecr-auth".into());
            if execution_role {
                add("ecs.capability.execution-role-ecr-pull".into());
            }
        }
        if !list_of(c, "environmentFiles").is_empty() {
            add("ecs.capability.env-files.s3".into());
        }
        if let Some(lp) = obj_of(c, "linuxParameters") {
            if bool_of(lp, "initProcessEnabled") == Some(true) {
                add(format!("{DOCKER_API}1.25"));
            }
        }
        if objects_of(c, "portMappings").any(|m| m.contains_key("containerPortRange")) {
            add("ecs.capability.container-port-range".into());
        }
        if obj_of(c, "restartPolicy").and_then(|r| bool_of(r, "enabled")) == Some(true) {
            add("ecs.capability.container-restart-policy".into());
        }
    }
    attrs.into_iter().collect()
}

/// `ssm` for a Parameter Store name or ARN, `asm` for a Secrets Manager ARN.
fn secret_store(value_from: &str) -> &'static str {
    if value_from.contains(":secretsmanager:") {
        "asm"
    } else {
        "ssm"
    }
}

/// The launch types ECS reports a definition as compatible with. Berth runs
/// every definition on its own hosts (`EC2`, `EXTERNAL`); `FARGATE` is added
/// when the definition satisfies Fargate's rules, as ECS reports it.
pub fn compatibilities(def: &Map<String, Value>) -> Vec<&'static str> {
    let mut out = vec!["EC2", "EXTERNAL"];
    if validate_definition(def, true).is_ok() {
        out.push("FARGATE");
    }
    out
}

/// The ECS `TaskDefinition` object for a stored definition.
#[allow(clippy::too_many_arguments)]
pub fn render(
    definition: &Map<String, Value>,
    arn: &str,
    revision: u32,
    status: &str,
    registered_at: f64,
    deregistered_at: Option<f64>,
    registered_by: Option<&str>,
) -> Value {
    let mut out = definition.clone();
    out.insert("taskDefinitionArn".into(), json!(arn));
    out.insert("revision".into(), json!(revision));
    out.insert("status".into(), json!(status));
    out.insert("registeredAt".into(), json!(registered_at));
    if let Some(at) = deregistered_at {
        out.insert("deregisteredAt".into(), json!(at));
    }
    if let Some(by) = registered_by {
        out.insert("registeredBy".into(), json!(by));
    }
    let attrs: Vec<Value> = required_attributes(definition)
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    out.insert("requiresAttributes".into(), Value::Array(attrs));
    out.insert("compatibilities".into(), json!(compatibilities(definition)));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn defaults_fill_only_absent_members() {
        let cases: Vec<(&str, Value, Value)> = vec![
            (
                "bridge",
                json!({"containerDefinitions": [{"name": "a", "portMappings": [{"containerPort": 80}]}]}),
                json!({"containerDefinitions": [{"name": "a", "cpu": 0, "essential": true,
                    "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
                    "environment": [], "mountPoints": [], "volumesFrom": [], "systemControls": []}],
                    "volumes": [], "placementConstraints": []}),
            ),
            (
                "awsvpc",
                json!({"containerDefinitions": [{"name": "a", "cpu": 5, "essential": false,
                    "portMappings": [{"containerPort": 80, "protocol": "udp"}, {"containerPortRange": "1-2"}],
                    "environment": [{"name": "X", "value": "1"}],
                    "healthCheck": {"command": ["CMD", "true"], "retries": 7}}],
                    "volumes": [{"name": "v"}, {"name": "w", "efsVolumeConfiguration": {"fileSystemId": "fs"}}]}),
                json!({"containerDefinitions": [{"name": "a", "cpu": 5, "essential": false,
                    "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "udp"},
                                     {"containerPortRange": "1-2", "protocol": "tcp"}],
                    "environment": [{"name": "X", "value": "1"}],
                    "mountPoints": [], "volumesFrom": [], "systemControls": [],
                    "healthCheck": {"command": ["CMD", "true"], "retries": 7, "interval": 30, "timeout": 5}}],
                    "volumes": [{"name": "v", "host": {}}, {"name": "w", "efsVolumeConfiguration": {"fileSystemId": "fs"}}],
                    "placementConstraints": []}),
            ),
            (
                "host",
                json!({"containerDefinitions": [{"name": "a", "portMappings": [{"containerPort": 8080, "hostPort": 8080}]}]}),
                json!({"containerDefinitions": [{"name": "a", "cpu": 0, "essential": true,
                    "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}],
                    "environment": [], "mountPoints": [], "volumesFrom": [], "systemControls": []}],
                    "volumes": [], "placementConstraints": []}),
            ),
        ];
        for (mode, input, expected) in cases {
            let mut def = obj(input);
            apply_defaults(&mut def, mode);
            assert_eq!(Value::Object(def), expected, "{mode}");
        }
    }

    #[test]
    fn required_attributes_follow_the_features_used() {
        let base = |extra: Value| {
            let mut def = obj(
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            );
            for (k, v) in obj(extra) {
                if k == "container" {
                    if let (Some(Value::Array(cs)), Value::Object(fields)) =
                        (def.get_mut("containerDefinitions"), v)
                    {
                        if let Some(Value::Object(c)) = cs.get_mut(0) {
                            c.extend(fields);
                        }
                    }
                } else {
                    def.insert(k, v);
                }
            }
            def
        };
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({}), vec![]),
            (
                json!({"networkMode": "awsvpc"}),
                vec![
                    "com.amazonaws.ecs.capability.docker-remote-api.1.18",
                    "ecs.capability.task-eni",
                ],
            ),
            (
                json!({"taskRoleArn": "r"}),
                vec!["com.amazonaws.ecs.capability.task-iam-role"],
            ),
            (
                json!({"taskRoleArn": "r", "networkMode": "host"}),
                vec![
                    "com.amazonaws.ecs.capability.task-iam-role",
                    "com.amazonaws.ecs.capability.task-iam-role-network-host",
                ],
            ),
            (
                json!({"container": {"logConfiguration": {"logDriver": "awslogs"}}}),
                vec![
                    "com.amazonaws.ecs.capability.docker-remote-api.1.19",
                    "com.amazonaws.ecs.capability.logging-driver.awslogs",
                ],
            ),
            (
                json!({"executionRoleArn": "e", "container": {"logConfiguration": {"logDriver": "awslogs"}}}),
                vec![
                    "com.amazonaws.ecs.capability.docker-remote-api.1.19",
                    "com.amazonaws.ecs.capability.logging-driver.awslogs",
                    "ecs.capability.execution-role-awslogs",
                ],
            ),
            (
                json!({"container": {"memoryReservation": 32}}),
                vec!["com.amazonaws.ecs.capability.docker-remote-api.1.21"],
            ),
            (
                json!({"container": {"healthCheck": {"command": ["CMD", "true"]}}}),
                vec![
                    "com.amazonaws.ecs.capability.docker-remote-api.1.24",
                    "ecs.capability.container-health-check",
                ],
            ),
            (
                json!({"container": {"stopTimeout": 10}}),
                vec!["ecs.capability.container-ordering"],
            ),
            (
                json!({"container": {"secrets": [{"name": "A", "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:x"}, {"name": "B", "valueFrom": "param"}]}}),
                vec![
                    "ecs.capability.secrets.asm.environment-variables",
                    "ecs.capability.secrets.ssm.environment-variables",
                ],
            ),
            (
                json!({"executionRoleArn": "e", "container": {"image": "1.dkr.ecr.us-east-1.amazonaws.com/x:1"}}),
                vec![
                    "com.amazonaws.ecs.capability.ecr-auth",
                    "ecs.capability.execution-role-ecr-pull",
                ],
            ),
            (
                json!({"proxyConfiguration": {"containerName": "a"}}),
                vec!["ecs.capability.aws-appmesh"],
            ),
            (
                json!({"volumes": [{"name": "v", "efsVolumeConfiguration": {"fileSystemId": "f", "transitEncryption": "ENABLED"}}]}),
                vec!["ecs.capability.efs", "ecs.capability.efsAuth"],
            ),
            (
                json!({"volumes": [{"name": "v", "dockerVolumeConfiguration": {"scope": "task"}}]}),
                vec![
                    "com.amazonaws.ecs.capability.docker-plugin.local",
                    "com.amazonaws.ecs.capability.docker-remote-api.1.25",
                ],
            ),
            (
                json!({"container": {"linuxParameters": {"initProcessEnabled": true}}}),
                vec!["com.amazonaws.ecs.capability.docker-remote-api.1.25"],
            ),
            (
                json!({"container": {"firelensConfiguration": {"type": "fluentbit", "options": {"config-file-type": "file"}}}}),
                vec![
                    "ecs.capability.firelens.fluentbit",
                    "ecs.capability.firelens.options.config.file",
                ],
            ),
        ];
        for (extra, expected) in cases {
            let def = base(extra.clone());
            assert_eq!(required_attributes(&def), expected, "{extra}");
        }
    }

    #[test]
    fn fargate_compatibility_is_reported_when_the_definition_qualifies() {
        let fargate_ok = json!({"family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "a", "image": "i"}]});
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (fargate_ok.clone(), vec!["EC2", "EXTERNAL", "FARGATE"]),
            (
                json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
                vec!["EC2", "EXTERNAL"],
            ),
            (
                json!({"family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "4096",
                "containerDefinitions": [{"name": "a", "image": "i"}]}),
                vec!["EC2", "EXTERNAL"],
            ),
            (
                json!({"family": "f", "networkMode": "awsvpc", "cpu": "256", "memory": "512",
                "containerDefinitions": [{"name": "a", "image": "i", "privileged": true}]}),
                vec!["EC2", "EXTERNAL"],
            ),
        ];
        for (def, expected) in cases {
            assert_eq!(compatibilities(&obj(def.clone())), expected, "{def}");
        }
    }

    #[test]
    fn render_adds_metadata_around_the_definition() {
        let def = obj(
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
        );
        let out = render(
            &def,
            "arn:aws:ecs:r:1:task-definition/f:2",
            2,
            "INACTIVE",
            10.5,
            Some(20.25),
            Some("arn:aws:iam::1:root"),
        );
        assert_eq!(out["family"], "f");
        assert_eq!(out["containerDefinitions"], def["containerDefinitions"]);
        assert_eq!(
            out["taskDefinitionArn"],
            "arn:aws:ecs:r:1:task-definition/f:2"
        );
        assert_eq!(out["revision"], 2);
        assert_eq!(out["status"], "INACTIVE");
        assert_eq!(out["registeredAt"], 10.5);
        assert_eq!(out["deregisteredAt"], 20.25);
        assert_eq!(out["registeredBy"], "arn:aws:iam::1:root");
        assert_eq!(out["requiresAttributes"], json!([]));
        assert_eq!(out["compatibilities"], json!(["EC2", "EXTERNAL"]));
        let active = render(&def, "a", 1, "ACTIVE", 1.0, None, None);
        assert!(active.get("deregisteredAt").is_none());
        assert!(active.get("registeredBy").is_none());
    }
}
