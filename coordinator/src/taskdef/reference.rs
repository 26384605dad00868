//! Task definition references as ECS requests carry them (`taskDefinition` of
//! RunTask, DescribeTaskDefinition, CreateService, ...): `family`,
//! `family:revision`, or the full ARN
//! `arn:PARTITION:ecs:REGION:ACCOUNT:task-definition/family:revision`.
//! A malformed reference is a `ClientException`, as ECS answers it.

use super::{validate_family_name, TaskDefRef};
use crate::error::ApiError;

/// Parses a task definition reference.
pub fn parse_reference(s: &str) -> Result<TaskDefRef, ApiError> {
    if s.is_empty() {
        return Err(ApiError::client(
            "TaskDefinition should not be null or empty.",
        ));
    }
    let name_part = if s.starts_with("arn:") {
        arn_resource(s)?
    } else {
        s
    };
    match name_part.split_once(':') {
        None => {
            validate_family_name(name_part)?;
            Ok(TaskDefRef::Family(name_part.to_string()))
        }
        Some((family, revision)) => {
            validate_family_name(family)?;
            let revision = parse_revision(revision)?;
            Ok(TaskDefRef::Revision {
                family: family.to_string(),
                revision,
            })
        }
    }
}

/// The `family[:revision]` part of a task definition ARN.
fn arn_resource(s: &str) -> Result<&str, ApiError> {
    let invalid = || ApiError::client(format!("Invalid task definition ARN: '{s}'."));
    // arn : partition : service : region : account : resource
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [_, partition, service, region, account, resource] = parts.as_slice() else {
        return Err(invalid());
    };
    if partition.is_empty() || *service != "ecs" || region.is_empty() || account.is_empty() {
        return Err(invalid());
    }
    resource
        .strip_prefix("task-definition/")
        .ok_or_else(invalid)
}

fn parse_revision(s: &str) -> Result<u32, ApiError> {
    let invalid = || ApiError::client(format!("Invalid revision number. Number: {s}"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_in_every_form_ecs_accepts() {
        let fam = |f: &str| Some(TaskDefRef::Family(f.to_string()));
        let rev = |f: &str, r: u32| {
            Some(TaskDefRef::Revision {
                family: f.to_string(),
                revision: r,
            })
        };
        let cases: Vec<(&str, Option<TaskDefRef>, &str)> = vec![
            ("web", fam("web"), ""),
            ("web_app-2", fam("web_app-2"), ""),
            ("web:3", rev("web", 3), ""),
            ("web:4294967295", rev("web", u32::MAX), ""),
            (
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:7",
                rev("web", 7),
                "",
            ),
            (
                "arn:aws-cn:ecs:cn-north-1:123456789012:task-definition/w:1",
                rev("w", 1),
                "",
            ),
            (
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web",
                fam("web"),
                "",
            ),
            ("", None, "should not be null or empty"),
            ("web:", None, "Invalid revision number. Number: "),
            ("web:0", None, "Invalid revision number. Number: 0"),
            ("web:x", None, "Invalid revision number. Number: x"),
            ("web:-1", None, "Invalid revision number"),
            ("web:+1", None, "Invalid revision number"),
            ("web:4294967296", None, "Invalid revision number"),
            ("web:1:2", None, "Invalid revision number"),
            ("we b", None, "Family"),
            (":3", None, "Family"),
            (
                "arn:aws:ecs:us-east-1:123456789012:service/web:7",
                None,
                "Invalid task definition ARN",
            ),
            (
                "arn:aws:s3:us-east-1:123456789012:task-definition/web:7",
                None,
                "Invalid task definition ARN",
            ),
            ("arn:aws:ecs", None, "Invalid task definition ARN"),
            (
                "arn:aws:ecs:us-east-1:123456789012:task-definition/web:zero",
                None,
                "Invalid revision number",
            ),
        ];
        for (input, expected, fragment) in cases {
            match (expected, parse_reference(input)) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{input}"),
                (None, Err(e)) => {
                    assert_eq!(e.kind, crate::error::ErrorKind::ClientException, "{input}");
                    assert!(
                        e.message.contains(fragment),
                        "{input}: {} lacks {fragment}",
                        e.message
                    );
                }
                (expected, got) => panic!("{input}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
