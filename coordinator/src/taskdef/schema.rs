//! The request shapes of `RegisterTaskDefinition` and `RunTask`'s `TaskOverride`,
//! generated from botocore 1.43.11's ECS model (`data/ecs/2014-11-13/service-2.json`)
//! by `gen_schema.py` in this directory. Do not edit by hand: regenerate.

use super::shape::{Member, Shape};

pub static STRING: Shape = Shape::String {
    enum_values: &[],
    min: 0,
    max: u32::MAX,
};
pub static NETWORK_MODE: Shape = Shape::String {
    enum_values: &["bridge", "host", "awsvpc", "none"],
    min: 0,
    max: u32::MAX,
};
pub static REPOSITORY_CREDENTIALS: Shape = Shape::Structure {
    members: &[Member {
        name: "credentialsParameter",
        shape: &STRING,
        required: true,
    }],
};
pub static INTEGER: Shape = Shape::Integer {
    min: i32::MIN,
    max: i32::MAX,
};
pub static BOXED_INTEGER: Shape = Shape::Integer {
    min: i32::MIN,
    max: i32::MAX,
};
pub static STRING_LIST: Shape = Shape::List {
    member: &STRING,
    min: 0,
    max: u32::MAX,
};
pub static TRANSPORT_PROTOCOL: Shape = Shape::String {
    enum_values: &["tcp", "udp"],
    min: 0,
    max: u32::MAX,
};
pub static APPLICATION_PROTOCOL: Shape = Shape::String {
    enum_values: &["http", "http2", "grpc"],
    min: 0,
    max: u32::MAX,
};
pub static PORT_MAPPING: Shape = Shape::Structure {
    members: &[
        Member {
            name: "containerPort",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "hostPort",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "protocol",
            shape: &TRANSPORT_PROTOCOL,
            required: false,
        },
        Member {
            name: "name",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "appProtocol",
            shape: &APPLICATION_PROTOCOL,
            required: false,
        },
        Member {
            name: "containerPortRange",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static PORT_MAPPING_LIST: Shape = Shape::List {
    member: &PORT_MAPPING,
    min: 0,
    max: u32::MAX,
};
pub static BOXED_BOOLEAN: Shape = Shape::Boolean;
pub static INTEGER_LIST: Shape = Shape::List {
    member: &BOXED_INTEGER,
    min: 0,
    max: u32::MAX,
};
pub static CONTAINER_RESTART_POLICY: Shape = Shape::Structure {
    members: &[
        Member {
            name: "enabled",
            shape: &BOXED_BOOLEAN,
            required: true,
        },
        Member {
            name: "ignoredExitCodes",
            shape: &INTEGER_LIST,
            required: false,
        },
        Member {
            name: "restartAttemptPeriod",
            shape: &BOXED_INTEGER,
            required: false,
        },
    ],
};
pub static KEY_VALUE_PAIR: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "value",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static ENVIRONMENT_VARIABLES: Shape = Shape::List {
    member: &KEY_VALUE_PAIR,
    min: 0,
    max: u32::MAX,
};
pub static ENVIRONMENT_FILE_TYPE: Shape = Shape::String {
    enum_values: &["s3"],
    min: 0,
    max: u32::MAX,
};
pub static ENVIRONMENT_FILE: Shape = Shape::Structure {
    members: &[
        Member {
            name: "value",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "type",
            shape: &ENVIRONMENT_FILE_TYPE,
            required: true,
        },
    ],
};
pub static ENVIRONMENT_FILES: Shape = Shape::List {
    member: &ENVIRONMENT_FILE,
    min: 0,
    max: u32::MAX,
};
pub static MOUNT_POINT: Shape = Shape::Structure {
    members: &[
        Member {
            name: "sourceVolume",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "containerPath",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "readOnly",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
    ],
};
pub static MOUNT_POINT_LIST: Shape = Shape::List {
    member: &MOUNT_POINT,
    min: 0,
    max: u32::MAX,
};
pub static VOLUME_FROM: Shape = Shape::Structure {
    members: &[
        Member {
            name: "sourceContainer",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "readOnly",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
    ],
};
pub static VOLUME_FROM_LIST: Shape = Shape::List {
    member: &VOLUME_FROM,
    min: 0,
    max: u32::MAX,
};
pub static KERNEL_CAPABILITIES: Shape = Shape::Structure {
    members: &[
        Member {
            name: "add",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "drop",
            shape: &STRING_LIST,
            required: false,
        },
    ],
};
pub static DEVICE_CGROUP_PERMISSION: Shape = Shape::String {
    enum_values: &["read", "write", "mknod"],
    min: 0,
    max: u32::MAX,
};
pub static DEVICE_CGROUP_PERMISSIONS: Shape = Shape::List {
    member: &DEVICE_CGROUP_PERMISSION,
    min: 0,
    max: u32::MAX,
};
pub static DEVICE: Shape = Shape::Structure {
    members: &[
        Member {
            name: "hostPath",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "containerPath",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "permissions",
            shape: &DEVICE_CGROUP_PERMISSIONS,
            required: false,
        },
    ],
};
pub static DEVICES_LIST: Shape = Shape::List {
    member: &DEVICE,
    min: 0,
    max: u32::MAX,
};
pub static TMPFS: Shape = Shape::Structure {
    members: &[
        Member {
            name: "containerPath",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "size",
            shape: &INTEGER,
            required: true,
        },
        Member {
            name: "mountOptions",
            shape: &STRING_LIST,
            required: false,
        },
    ],
};
pub static TMPFS_LIST: Shape = Shape::List {
    member: &TMPFS,
    min: 0,
    max: u32::MAX,
};
pub static LINUX_PARAMETERS: Shape = Shape::Structure {
    members: &[
        Member {
            name: "capabilities",
            shape: &KERNEL_CAPABILITIES,
            required: false,
        },
        Member {
            name: "devices",
            shape: &DEVICES_LIST,
            required: false,
        },
        Member {
            name: "initProcessEnabled",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "sharedMemorySize",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "tmpfs",
            shape: &TMPFS_LIST,
            required: false,
        },
        Member {
            name: "maxSwap",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "swappiness",
            shape: &BOXED_INTEGER,
            required: false,
        },
    ],
};
pub static SECRET: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "valueFrom",
            shape: &STRING,
            required: true,
        },
    ],
};
pub static SECRET_LIST: Shape = Shape::List {
    member: &SECRET,
    min: 0,
    max: u32::MAX,
};
pub static CONTAINER_CONDITION: Shape = Shape::String {
    enum_values: &["START", "COMPLETE", "SUCCESS", "HEALTHY"],
    min: 0,
    max: u32::MAX,
};
pub static CONTAINER_DEPENDENCY: Shape = Shape::Structure {
    members: &[
        Member {
            name: "containerName",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "condition",
            shape: &CONTAINER_CONDITION,
            required: true,
        },
    ],
};
pub static CONTAINER_DEPENDENCIES: Shape = Shape::List {
    member: &CONTAINER_DEPENDENCY,
    min: 0,
    max: u32::MAX,
};
pub static VERSION_CONSISTENCY: Shape = Shape::String {
    enum_values: &["enabled", "disabled"],
    min: 0,
    max: u32::MAX,
};
pub static HOST_ENTRY: Shape = Shape::Structure {
    members: &[
        Member {
            name: "hostname",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "ipAddress",
            shape: &STRING,
            required: true,
        },
    ],
};
pub static HOST_ENTRY_LIST: Shape = Shape::List {
    member: &HOST_ENTRY,
    min: 0,
    max: u32::MAX,
};
pub static DOCKER_LABELS_MAP: Shape = Shape::Map {
    key: &STRING,
    value: &STRING,
};
pub static ULIMIT_NAME: Shape = Shape::String {
    enum_values: &[
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ],
    min: 0,
    max: u32::MAX,
};
pub static ULIMIT: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &ULIMIT_NAME,
            required: true,
        },
        Member {
            name: "softLimit",
            shape: &INTEGER,
            required: true,
        },
        Member {
            name: "hardLimit",
            shape: &INTEGER,
            required: true,
        },
    ],
};
pub static ULIMIT_LIST: Shape = Shape::List {
    member: &ULIMIT,
    min: 0,
    max: u32::MAX,
};
pub static LOG_DRIVER: Shape = Shape::String {
    enum_values: &[
        "json-file",
        "syslog",
        "journald",
        "gelf",
        "fluentd",
        "awslogs",
        "splunk",
        "awsfirelens",
    ],
    min: 0,
    max: u32::MAX,
};
pub static LOG_CONFIGURATION_OPTIONS_MAP: Shape = Shape::Map {
    key: &STRING,
    value: &STRING,
};
pub static LOG_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "logDriver",
            shape: &LOG_DRIVER,
            required: true,
        },
        Member {
            name: "options",
            shape: &LOG_CONFIGURATION_OPTIONS_MAP,
            required: false,
        },
        Member {
            name: "secretOptions",
            shape: &SECRET_LIST,
            required: false,
        },
    ],
};
pub static HEALTH_CHECK: Shape = Shape::Structure {
    members: &[
        Member {
            name: "command",
            shape: &STRING_LIST,
            required: true,
        },
        Member {
            name: "interval",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "timeout",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "retries",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "startPeriod",
            shape: &BOXED_INTEGER,
            required: false,
        },
    ],
};
pub static SYSTEM_CONTROL: Shape = Shape::Structure {
    members: &[
        Member {
            name: "namespace",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "value",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static SYSTEM_CONTROLS: Shape = Shape::List {
    member: &SYSTEM_CONTROL,
    min: 0,
    max: u32::MAX,
};
pub static RESOURCE_TYPE: Shape = Shape::String {
    enum_values: &["GPU", "InferenceAccelerator"],
    min: 0,
    max: u32::MAX,
};
pub static RESOURCE_REQUIREMENT: Shape = Shape::Structure {
    members: &[
        Member {
            name: "value",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "type",
            shape: &RESOURCE_TYPE,
            required: true,
        },
    ],
};
pub static RESOURCE_REQUIREMENTS: Shape = Shape::List {
    member: &RESOURCE_REQUIREMENT,
    min: 0,
    max: u32::MAX,
};
pub static FIRELENS_CONFIGURATION_TYPE: Shape = Shape::String {
    enum_values: &["fluentd", "fluentbit"],
    min: 0,
    max: u32::MAX,
};
pub static FIRELENS_CONFIGURATION_OPTIONS_MAP: Shape = Shape::Map {
    key: &STRING,
    value: &STRING,
};
pub static FIRELENS_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "type",
            shape: &FIRELENS_CONFIGURATION_TYPE,
            required: true,
        },
        Member {
            name: "options",
            shape: &FIRELENS_CONFIGURATION_OPTIONS_MAP,
            required: false,
        },
    ],
};
pub static CONTAINER_DEFINITION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "image",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "repositoryCredentials",
            shape: &REPOSITORY_CREDENTIALS,
            required: false,
        },
        Member {
            name: "cpu",
            shape: &INTEGER,
            required: false,
        },
        Member {
            name: "memory",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "memoryReservation",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "links",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "portMappings",
            shape: &PORT_MAPPING_LIST,
            required: false,
        },
        Member {
            name: "essential",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "restartPolicy",
            shape: &CONTAINER_RESTART_POLICY,
            required: false,
        },
        Member {
            name: "entryPoint",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "command",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "environment",
            shape: &ENVIRONMENT_VARIABLES,
            required: false,
        },
        Member {
            name: "environmentFiles",
            shape: &ENVIRONMENT_FILES,
            required: false,
        },
        Member {
            name: "mountPoints",
            shape: &MOUNT_POINT_LIST,
            required: false,
        },
        Member {
            name: "volumesFrom",
            shape: &VOLUME_FROM_LIST,
            required: false,
        },
        Member {
            name: "linuxParameters",
            shape: &LINUX_PARAMETERS,
            required: false,
        },
        Member {
            name: "secrets",
            shape: &SECRET_LIST,
            required: false,
        },
        Member {
            name: "dependsOn",
            shape: &CONTAINER_DEPENDENCIES,
            required: false,
        },
        Member {
            name: "startTimeout",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "stopTimeout",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "versionConsistency",
            shape: &VERSION_CONSISTENCY,
            required: false,
        },
        Member {
            name: "hostname",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "user",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "workingDirectory",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "disableNetworking",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "privileged",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "readonlyRootFilesystem",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "dnsServers",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "dnsSearchDomains",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "extraHosts",
            shape: &HOST_ENTRY_LIST,
            required: false,
        },
        Member {
            name: "dockerSecurityOptions",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "interactive",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "pseudoTerminal",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "dockerLabels",
            shape: &DOCKER_LABELS_MAP,
            required: false,
        },
        Member {
            name: "ulimits",
            shape: &ULIMIT_LIST,
            required: false,
        },
        Member {
            name: "logConfiguration",
            shape: &LOG_CONFIGURATION,
            required: false,
        },
        Member {
            name: "healthCheck",
            shape: &HEALTH_CHECK,
            required: false,
        },
        Member {
            name: "systemControls",
            shape: &SYSTEM_CONTROLS,
            required: false,
        },
        Member {
            name: "resourceRequirements",
            shape: &RESOURCE_REQUIREMENTS,
            required: false,
        },
        Member {
            name: "firelensConfiguration",
            shape: &FIRELENS_CONFIGURATION,
            required: false,
        },
        Member {
            name: "credentialSpecs",
            shape: &STRING_LIST,
            required: false,
        },
    ],
};
pub static CONTAINER_DEFINITIONS: Shape = Shape::List {
    member: &CONTAINER_DEFINITION,
    min: 0,
    max: u32::MAX,
};
pub static HOST_VOLUME_PROPERTIES: Shape = Shape::Structure {
    members: &[Member {
        name: "sourcePath",
        shape: &STRING,
        required: false,
    }],
};
pub static SCOPE: Shape = Shape::String {
    enum_values: &["task", "shared"],
    min: 0,
    max: u32::MAX,
};
pub static STRING_MAP: Shape = Shape::Map {
    key: &STRING,
    value: &STRING,
};
pub static DOCKER_VOLUME_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "scope",
            shape: &SCOPE,
            required: false,
        },
        Member {
            name: "autoprovision",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
        Member {
            name: "driver",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "driverOpts",
            shape: &STRING_MAP,
            required: false,
        },
        Member {
            name: "labels",
            shape: &STRING_MAP,
            required: false,
        },
    ],
};
pub static E_F_S_TRANSIT_ENCRYPTION: Shape = Shape::String {
    enum_values: &["ENABLED", "DISABLED"],
    min: 0,
    max: u32::MAX,
};
pub static E_F_S_AUTHORIZATION_CONFIG_I_A_M: Shape = Shape::String {
    enum_values: &["ENABLED", "DISABLED"],
    min: 0,
    max: u32::MAX,
};
pub static E_F_S_AUTHORIZATION_CONFIG: Shape = Shape::Structure {
    members: &[
        Member {
            name: "accessPointId",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "iam",
            shape: &E_F_S_AUTHORIZATION_CONFIG_I_A_M,
            required: false,
        },
    ],
};
pub static E_F_S_VOLUME_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "fileSystemId",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "rootDirectory",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "transitEncryption",
            shape: &E_F_S_TRANSIT_ENCRYPTION,
            required: false,
        },
        Member {
            name: "transitEncryptionPort",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "authorizationConfig",
            shape: &E_F_S_AUTHORIZATION_CONFIG,
            required: false,
        },
    ],
};
pub static S3_FILES_VOLUME_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "fileSystemArn",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "rootDirectory",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "transitEncryptionPort",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "accessPointArn",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static F_SX_WINDOWS_FILE_SERVER_AUTHORIZATION_CONFIG: Shape = Shape::Structure {
    members: &[
        Member {
            name: "credentialsParameter",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "domain",
            shape: &STRING,
            required: true,
        },
    ],
};
pub static F_SX_WINDOWS_FILE_SERVER_VOLUME_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "fileSystemId",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "rootDirectory",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "authorizationConfig",
            shape: &F_SX_WINDOWS_FILE_SERVER_AUTHORIZATION_CONFIG,
            required: true,
        },
    ],
};
pub static VOLUME: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "host",
            shape: &HOST_VOLUME_PROPERTIES,
            required: false,
        },
        Member {
            name: "dockerVolumeConfiguration",
            shape: &DOCKER_VOLUME_CONFIGURATION,
            required: false,
        },
        Member {
            name: "efsVolumeConfiguration",
            shape: &E_F_S_VOLUME_CONFIGURATION,
            required: false,
        },
        Member {
            name: "s3filesVolumeConfiguration",
            shape: &S3_FILES_VOLUME_CONFIGURATION,
            required: false,
        },
        Member {
            name: "fsxWindowsFileServerVolumeConfiguration",
            shape: &F_SX_WINDOWS_FILE_SERVER_VOLUME_CONFIGURATION,
            required: false,
        },
        Member {
            name: "configuredAtLaunch",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
    ],
};
pub static VOLUME_LIST: Shape = Shape::List {
    member: &VOLUME,
    min: 0,
    max: u32::MAX,
};
pub static TASK_DEFINITION_PLACEMENT_CONSTRAINT_TYPE: Shape = Shape::String {
    enum_values: &["memberOf"],
    min: 0,
    max: u32::MAX,
};
pub static TASK_DEFINITION_PLACEMENT_CONSTRAINT: Shape = Shape::Structure {
    members: &[
        Member {
            name: "type",
            shape: &TASK_DEFINITION_PLACEMENT_CONSTRAINT_TYPE,
            required: false,
        },
        Member {
            name: "expression",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static TASK_DEFINITION_PLACEMENT_CONSTRAINTS: Shape = Shape::List {
    member: &TASK_DEFINITION_PLACEMENT_CONSTRAINT,
    min: 0,
    max: u32::MAX,
};
pub static COMPATIBILITY: Shape = Shape::String {
    enum_values: &["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"],
    min: 0,
    max: u32::MAX,
};
pub static COMPATIBILITY_LIST: Shape = Shape::List {
    member: &COMPATIBILITY,
    min: 0,
    max: u32::MAX,
};
pub static TAG_KEY: Shape = Shape::String {
    enum_values: &[],
    min: 1,
    max: 128,
};
pub static TAG_VALUE: Shape = Shape::String {
    enum_values: &[],
    min: 0,
    max: 256,
};
pub static TAG: Shape = Shape::Structure {
    members: &[
        Member {
            name: "key",
            shape: &TAG_KEY,
            required: false,
        },
        Member {
            name: "value",
            shape: &TAG_VALUE,
            required: false,
        },
    ],
};
pub static TAGS: Shape = Shape::List {
    member: &TAG,
    min: 0,
    max: 50,
};
pub static PID_MODE: Shape = Shape::String {
    enum_values: &["host", "task"],
    min: 0,
    max: u32::MAX,
};
pub static IPC_MODE: Shape = Shape::String {
    enum_values: &["host", "task", "none"],
    min: 0,
    max: u32::MAX,
};
pub static PROXY_CONFIGURATION_TYPE: Shape = Shape::String {
    enum_values: &["APPMESH"],
    min: 0,
    max: u32::MAX,
};
pub static PROXY_CONFIGURATION_PROPERTIES: Shape = Shape::List {
    member: &KEY_VALUE_PAIR,
    min: 0,
    max: u32::MAX,
};
pub static PROXY_CONFIGURATION: Shape = Shape::Structure {
    members: &[
        Member {
            name: "type",
            shape: &PROXY_CONFIGURATION_TYPE,
            required: false,
        },
        Member {
            name: "containerName",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "properties",
            shape: &PROXY_CONFIGURATION_PROPERTIES,
            required: false,
        },
    ],
};
pub static INFERENCE_ACCELERATOR: Shape = Shape::Structure {
    members: &[
        Member {
            name: "deviceName",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "deviceType",
            shape: &STRING,
            required: true,
        },
    ],
};
pub static INFERENCE_ACCELERATORS: Shape = Shape::List {
    member: &INFERENCE_ACCELERATOR,
    min: 0,
    max: u32::MAX,
};
pub static EPHEMERAL_STORAGE: Shape = Shape::Structure {
    members: &[Member {
        name: "sizeInGiB",
        shape: &INTEGER,
        required: true,
    }],
};
pub static C_P_U_ARCHITECTURE: Shape = Shape::String {
    enum_values: &["X86_64", "ARM64"],
    min: 0,
    max: u32::MAX,
};
pub static O_S_FAMILY: Shape = Shape::String {
    enum_values: &[
        "WINDOWS_SERVER_2019_FULL",
        "WINDOWS_SERVER_2019_CORE",
        "WINDOWS_SERVER_2016_FULL",
        "WINDOWS_SERVER_2004_CORE",
        "WINDOWS_SERVER_2022_CORE",
        "WINDOWS_SERVER_2022_FULL",
        "WINDOWS_SERVER_2025_CORE",
        "WINDOWS_SERVER_2025_FULL",
        "WINDOWS_SERVER_20H2_CORE",
        "LINUX",
    ],
    min: 0,
    max: u32::MAX,
};
pub static RUNTIME_PLATFORM: Shape = Shape::Structure {
    members: &[
        Member {
            name: "cpuArchitecture",
            shape: &C_P_U_ARCHITECTURE,
            required: false,
        },
        Member {
            name: "operatingSystemFamily",
            shape: &O_S_FAMILY,
            required: false,
        },
    ],
};
pub static REGISTER_TASK_DEFINITION_REQUEST: Shape = Shape::Structure {
    members: &[
        Member {
            name: "family",
            shape: &STRING,
            required: true,
        },
        Member {
            name: "taskRoleArn",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "executionRoleArn",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "networkMode",
            shape: &NETWORK_MODE,
            required: false,
        },
        Member {
            name: "containerDefinitions",
            shape: &CONTAINER_DEFINITIONS,
            required: true,
        },
        Member {
            name: "volumes",
            shape: &VOLUME_LIST,
            required: false,
        },
        Member {
            name: "placementConstraints",
            shape: &TASK_DEFINITION_PLACEMENT_CONSTRAINTS,
            required: false,
        },
        Member {
            name: "requiresCompatibilities",
            shape: &COMPATIBILITY_LIST,
            required: false,
        },
        Member {
            name: "cpu",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "memory",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "tags",
            shape: &TAGS,
            required: false,
        },
        Member {
            name: "pidMode",
            shape: &PID_MODE,
            required: false,
        },
        Member {
            name: "ipcMode",
            shape: &IPC_MODE,
            required: false,
        },
        Member {
            name: "proxyConfiguration",
            shape: &PROXY_CONFIGURATION,
            required: false,
        },
        Member {
            name: "inferenceAccelerators",
            shape: &INFERENCE_ACCELERATORS,
            required: false,
        },
        Member {
            name: "ephemeralStorage",
            shape: &EPHEMERAL_STORAGE,
            required: false,
        },
        Member {
            name: "runtimePlatform",
            shape: &RUNTIME_PLATFORM,
            required: false,
        },
        Member {
            name: "enableFaultInjection",
            shape: &BOXED_BOOLEAN,
            required: false,
        },
    ],
};
pub static CONTAINER_OVERRIDE: Shape = Shape::Structure {
    members: &[
        Member {
            name: "name",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "command",
            shape: &STRING_LIST,
            required: false,
        },
        Member {
            name: "environment",
            shape: &ENVIRONMENT_VARIABLES,
            required: false,
        },
        Member {
            name: "environmentFiles",
            shape: &ENVIRONMENT_FILES,
            required: false,
        },
        Member {
            name: "cpu",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "memory",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "memoryReservation",
            shape: &BOXED_INTEGER,
            required: false,
        },
        Member {
            name: "resourceRequirements",
            shape: &RESOURCE_REQUIREMENTS,
            required: false,
        },
    ],
};
pub static CONTAINER_OVERRIDES: Shape = Shape::List {
    member: &CONTAINER_OVERRIDE,
    min: 0,
    max: u32::MAX,
};
pub static INFERENCE_ACCELERATOR_OVERRIDE: Shape = Shape::Structure {
    members: &[
        Member {
            name: "deviceName",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "deviceType",
            shape: &STRING,
            required: false,
        },
    ],
};
pub static INFERENCE_ACCELERATOR_OVERRIDES: Shape = Shape::List {
    member: &INFERENCE_ACCELERATOR_OVERRIDE,
    min: 0,
    max: u32::MAX,
};
pub static TASK_OVERRIDE: Shape = Shape::Structure {
    members: &[
        Member {
            name: "containerOverrides",
            shape: &CONTAINER_OVERRIDES,
            required: false,
        },
        Member {
            name: "cpu",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "inferenceAcceleratorOverrides",
            shape: &INFERENCE_ACCELERATOR_OVERRIDES,
            required: false,
        },
        Member {
            name: "executionRoleArn",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "memory",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "taskRoleArn",
            shape: &STRING,
            required: false,
        },
        Member {
            name: "ephemeralStorage",
            shape: &EPHEMERAL_STORAGE,
            required: false,
        },
    ],
};
