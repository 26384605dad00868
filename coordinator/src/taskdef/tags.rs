//! ECS resource tags: the `tags` list of RegisterTaskDefinition (and of any
//! other request that tags a resource). Rules as the ECS API reference states
//! them: at most 50 tags, unique keys, keys 1-128 and values 0-256 Unicode
//! characters of letters, numbers, spaces and `+ - = . _ : / @`, and the `aws:`
//! prefix (any case) reserved for AWS on keys and values. Violations answer
//! `InvalidParameterException`; a wrong JSON type is `SerializationException`.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use super::Tag;
use crate::error::{ApiError, ErrorKind};

pub const MAX_TAGS: usize = 50;
pub const MAX_KEY_CHARS: usize = 128;
pub const MAX_VALUE_CHARS: usize = 256;

fn allowed() -> &'static Regex {
    static ALLOWED: OnceLock<Regex> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        // The model's TagKey/TagValue pattern, anchored.
        Regex::new(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$").expect("constant pattern compiles")
    })
}

fn serialization(message: &str) -> ApiError {
    ApiError::new(ErrorKind::SerializationException, message)
}

/// Validates an ECS `tags` list and returns it as [`Tag`]s in the order sent.
pub fn validate_tags(tags: &Value) -> Result<Vec<Tag>, ApiError> {
    let items = match tags {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        Value::Object(_) => {
            return Err(serialization(
                "Start of structure or map found where not expected.",
            ))
        }
        _ => return Err(serialization("Expected list or null")),
    };
    if items.len() > MAX_TAGS {
        return Err(ApiError::invalid(format!(
            "Too many tags: {}. A resource can have at most {MAX_TAGS} tags.",
            items.len()
        )));
    }
    let mut out: Vec<Tag> = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(fields) = item else {
            return Err(serialization("Expected a Tag structure"));
        };
        let key = tag_string(fields.get("key"))?;
        let value = tag_string(fields.get("value"))?;
        let Some(key) = key else {
            return Err(ApiError::invalid("Tag keys must not be empty."));
        };
        let value = value.unwrap_or_default();
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_KEY_CHARS {
            return Err(ApiError::invalid(format!(
                "Tag key '{key}' must be between 1 and {MAX_KEY_CHARS} characters."
            )));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(ApiError::invalid(format!(
                "Tag value for key '{key}' must be at most {MAX_VALUE_CHARS} characters."
            )));
        }
        if !allowed().is_match(&key) {
            return Err(ApiError::invalid(format!(
                "Tag key '{key}' contains invalid characters. Allowed: letters, numbers, spaces and + - = . _ : / @"
            )));
        }
        if !allowed().is_match(&value) {
            return Err(ApiError::invalid(format!(
                "Tag value for key '{key}' contains invalid characters. Allowed: letters, numbers, spaces and + - = . _ : / @"
            )));
        }
        if reserved(&key) || reserved(&value) {
            return Err(ApiError::invalid(
                "Tag keys and values that begin with 'aws:' are reserved for AWS use.",
            ));
        }
        if out.iter().any(|t| t.key == key) {
            return Err(ApiError::invalid(format!(
                "Duplicate tag key '{key}': each tag key must be unique."
            )));
        }
        out.push(Tag { key, value });
    }
    Ok(out)
}

fn tag_string(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(_)) => Err(serialization(
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        )),
        Some(Value::Bool(_)) => Err(serialization(
            "class java.lang.Boolean can not be converted to an String",
        )),
        Some(Value::Array(_)) => Err(serialization("Start of list found where not expected")),
        Some(Value::Object(_)) => Err(serialization(
            "Start of structure or map found where not expected.",
        )),
    }
}

fn reserved(s: &str) -> bool {
    s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tags_follow_the_ecs_rules() {
        let long_key = "k".repeat(129);
        let max_key = "k".repeat(128);
        let long_value = "v".repeat(257);
        let max_value = "v".repeat(256);
        let many: Vec<Value> = (0..51)
            .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
            .collect();
        let fifty: Vec<Value> = (0..50).map(|i| json!({"key": format!("k{i}")})).collect();
        // (tags, expected error kind or None, message fragment)
        let cases: Vec<(Value, Option<ErrorKind>, &str)> = vec![
            (json!([]), None, ""),
            (Value::Null, None, ""),
            (json!([{"key": "team", "value": "blue"}]), None, ""),
            (
                json!([{"key": "Ünïcode Ключ", "value": "值 1+1=2 a/b@c:d_e.f-g"}]),
                None,
                "",
            ),
            (json!([{"key": "only-key"}]), None, ""),
            (json!([{"key": max_key, "value": max_value}]), None, ""),
            (Value::Array(fifty), None, ""),
            (
                Value::Array(many),
                Some(ErrorKind::InvalidParameterException),
                "Too many tags: 51",
            ),
            (
                json!([{"value": "v"}]),
                Some(ErrorKind::InvalidParameterException),
                "must not be empty",
            ),
            (
                json!([{"key": ""}]),
                Some(ErrorKind::InvalidParameterException),
                "between 1 and 128",
            ),
            (
                json!([{"key": long_key}]),
                Some(ErrorKind::InvalidParameterException),
                "between 1 and 128",
            ),
            (
                json!([{"key": "k", "value": long_value}]),
                Some(ErrorKind::InvalidParameterException),
                "at most 256",
            ),
            (
                json!([{"key": "bad*key"}]),
                Some(ErrorKind::InvalidParameterException),
                "invalid characters",
            ),
            (
                json!([{"key": "k", "value": "semi;colon"}]),
                Some(ErrorKind::InvalidParameterException),
                "invalid characters",
            ),
            (
                json!([{"key": "tab\tkey"}]),
                Some(ErrorKind::InvalidParameterException),
                "invalid characters",
            ),
            (
                json!([{"key": "aws:owner"}]),
                Some(ErrorKind::InvalidParameterException),
                "reserved",
            ),
            (
                json!([{"key": "AWS:owner"}]),
                Some(ErrorKind::InvalidParameterException),
                "reserved",
            ),
            (
                json!([{"key": "k", "value": "Aws:x"}]),
                Some(ErrorKind::InvalidParameterException),
                "reserved",
            ),
            (
                json!([{"key": "a"}, {"key": "a", "value": "2"}]),
                Some(ErrorKind::InvalidParameterException),
                "Duplicate tag key 'a'",
            ),
            (
                json!({"key": "a"}),
                Some(ErrorKind::SerializationException),
                "Start of structure",
            ),
            (
                json!("a"),
                Some(ErrorKind::SerializationException),
                "Expected list",
            ),
            (
                json!(["a"]),
                Some(ErrorKind::SerializationException),
                "Tag structure",
            ),
            (
                json!([{"key": 1}]),
                Some(ErrorKind::SerializationException),
                "can not be converted to an String",
            ),
        ];
        for (tags, expected, fragment) in cases {
            match (expected, validate_tags(&tags)) {
                (None, Ok(_)) => {}
                (Some(kind), Err(e)) => {
                    assert_eq!(e.kind, kind, "{tags}: {e}");
                    assert!(
                        e.message.contains(fragment),
                        "{tags}: {} lacks {fragment}",
                        e.message
                    );
                }
                (expected, got) => panic!("{tags}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn tags_come_back_in_order_with_empty_values_defaulted() {
        let tags =
            validate_tags(&json!([{"key": "b", "value": "2"}, {"key": "a"}])).expect("valid");
        assert_eq!(
            tags,
            vec![
                Tag {
                    key: "b".into(),
                    value: "2".into()
                },
                Tag {
                    key: "a".into(),
                    value: String::new()
                }
            ]
        );
    }
}
