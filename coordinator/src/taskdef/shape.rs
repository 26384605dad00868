//! Protocol-level checking of a request body against the botocore shapes in
//! [`super::schema`]: JSON types (a mismatch is `SerializationException`, as the
//! AWS JSON 1.1 front end answers), then the model's own constraints (enum
//! values, required members, length and range limits), answered with the
//! error kind the caller chooses in the AWS "1 validation error detected" form.
//!
//! The walk also produces the cleaned copy that Berth stores: `null` members
//! are dropped (the AWS JSON protocol treats them as absent) and members the
//! model does not know are dropped (the AWS front end ignores them), so what is
//! echoed back is exactly what a modelled client sent.

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorKind};

/// One node of the botocore model, reduced to what validation needs.
#[derive(Debug)]
pub enum Shape {
    String {
        enum_values: &'static [&'static str],
        min: u32,
        max: u32,
    },
    Integer {
        min: i32,
        max: i32,
    },
    Boolean,
    List {
        member: &'static Shape,
        min: u32,
        max: u32,
    },
    Map {
        key: &'static Shape,
        value: &'static Shape,
    },
    Structure {
        members: &'static [Member],
    },
}

/// A member of a structure shape.
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub shape: &'static Shape,
    pub required: bool,
}

/// How deep a request may nest; the model's deepest path is far shallower, so
/// this only stops hostile bodies from recursing without bound.
const MAX_DEPTH: usize = 32;

/// Checks `value` against `shape` and returns the cleaned copy. `path` is the
/// AWS-style member path of `value` (`""` for the request itself);
/// `constraint_kind` is the exception used for model-constraint violations.
pub fn check(
    value: &Value,
    shape: &Shape,
    path: &str,
    constraint_kind: ErrorKind,
) -> Result<Value, ApiError> {
    Walker { constraint_kind }.walk(value, shape, path, 0)
}

struct Walker {
    constraint_kind: ErrorKind,
}

impl Walker {
    fn walk(
        &self,
        value: &Value,
        shape: &Shape,
        path: &str,
        depth: usize,
    ) -> Result<Value, ApiError> {
        if depth > MAX_DEPTH {
            return Err(serialization("Request nesting is too deep."));
        }
        match shape {
            Shape::String {
                enum_values,
                min,
                max,
            } => {
                let Value::String(s) = value else {
                    return Err(type_error(value, "an String"));
                };
                if !enum_values.is_empty() && !enum_values.contains(&s.as_str()) {
                    return Err(self.constraint(
                        &quoted(s),
                        path,
                        &format!(
                            "Member must satisfy enum value set: [{}]",
                            enum_values.join(", ")
                        ),
                    ));
                }
                self.length(s.chars().count(), *min, *max, &quoted(s), path)?;
                Ok(value.clone())
            }
            Shape::Integer { min, max } => {
                let n = integer(value, "an Integer")?;
                let Ok(n32) = i32::try_from(n) else {
                    return Err(serialization(
                        "NUMBER_VALUE can not be converted to an Integer",
                    ));
                };
                if n32 < *min {
                    return Err(self.constraint(
                        &n.to_string(),
                        path,
                        &format!("Member must have value greater than or equal to {min}"),
                    ));
                }
                if n32 > *max {
                    return Err(self.constraint(
                        &n.to_string(),
                        path,
                        &format!("Member must have value less than or equal to {max}"),
                    ));
                }
                Ok(value.clone())
            }
            Shape::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => Err(type_error(value, "a Boolean")),
            },
            Shape::List { member, min, max } => {
                let Value::Array(items) = value else {
                    return Err(type_error(value, "a List"));
                };
                let len = u32::try_from(items.len()).unwrap_or(u32::MAX);
                if len < *min {
                    return Err(self.constraint(
                        "[...]",
                        path,
                        &format!("Member must have length greater than or equal to {min}"),
                    ));
                }
                if len > *max {
                    return Err(self.constraint(
                        "[...]",
                        path,
                        &format!("Member must have length less than or equal to {max}"),
                    ));
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}.{}.member", i + 1);
                    if item.is_null() {
                        // A null inside a list is not an absent member: the
                        // AWS front end rejects it.
                        return Err(self.constraint("null", &item_path, "Member must not be null"));
                    }
                    out.push(self.walk(item, member, &item_path, depth + 1)?);
                }
                Ok(Value::Array(out))
            }
            Shape::Map { key, value: val } => {
                let Value::Object(entries) = value else {
                    return Err(type_error(value, "a Map"));
                };
                let mut out = Map::new();
                for (k, v) in entries {
                    let entry_path = join(path, k);
                    self.walk(&Value::String(k.clone()), key, &entry_path, depth + 1)?;
                    if v.is_null() {
                        return Err(self.constraint(
                            "null",
                            &entry_path,
                            "Member must not be null",
                        ));
                    }
                    out.insert(k.clone(), self.walk(v, val, &entry_path, depth + 1)?);
                }
                Ok(Value::Object(out))
            }
            Shape::Structure { members } => {
                let Value::Object(fields) = value else {
                    return Err(type_error(value, "a Structure"));
                };
                let mut out = Map::new();
                for member in members.iter() {
                    let member_path = join(path, member.name);
                    match fields.get(member.name) {
                        None | Some(Value::Null) => {
                            if member.required {
                                return Err(self.constraint(
                                    "null",
                                    &member_path,
                                    "Member must not be null",
                                ));
                            }
                        }
                        Some(v) => {
                            out.insert(
                                member.name.to_string(),
                                self.walk(v, member.shape, &member_path, depth + 1)?,
                            );
                        }
                    }
                }
                for name in fields.keys() {
                    if !members.iter().any(|m| m.name == name) {
                        tracing::debug!(path = %join(path, name), "ignoring unmodelled member");
                    }
                }
                Ok(Value::Object(out))
            }
        }
    }

    fn length(
        &self,
        len: usize,
        min: u32,
        max: u32,
        shown: &str,
        path: &str,
    ) -> Result<(), ApiError> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        if len < min {
            return Err(self.constraint(
                shown,
                path,
                &format!("Member must have length greater than or equal to {min}"),
            ));
        }
        if len > max {
            return Err(self.constraint(
                shown,
                path,
                &format!("Member must have length less than or equal to {max}"),
            ));
        }
        Ok(())
    }

    fn constraint(&self, shown: &str, path: &str, rule: &str) -> ApiError {
        ApiError::new(
            self.constraint_kind,
            format!("1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: {rule}"),
        )
    }
}

fn quoted(s: &str) -> String {
    format!("'{s}'")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn serialization(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::SerializationException, message)
}

/// An integral JSON number as i64, or the protocol error for anything else.
fn integer(value: &Value, target: &str) -> Result<i64, ApiError> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None => Err(serialization(format!(
                "NUMBER_VALUE can not be converted to {target}"
            ))),
        },
        _ => Err(type_error(value, target)),
    }
}

/// The message the AWS JSON front end gives when a JSON value has the wrong type.
fn type_error(value: &Value, target: &str) -> ApiError {
    serialization(match value {
        Value::Object(_) => "Start of structure or map found where not expected.".to_string(),
        Value::Array(_) => "Start of list found where not expected".to_string(),
        // The front end's own wording for a number where a string belongs.
        Value::Number(_) if target == "an String" => {
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String".to_string()
        }
        Value::Number(_) => format!("NUMBER_VALUE can not be converted to {target}"),
        Value::String(_) => format!("STRING_VALUE can not be converted to {target}"),
        Value::Bool(_) if target == "an String" => {
            "class java.lang.Boolean can not be converted to an String".to_string()
        }
        Value::Bool(_) => format!("BOOLEAN_VALUE can not be converted to {target}"),
        Value::Null => format!("null can not be converted to {target}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static COLOR: Shape = Shape::String {
        enum_values: &["red", "blue"],
        min: 0,
        max: u32::MAX,
    };
    static NAME: Shape = Shape::String {
        enum_values: &[],
        min: 1,
        max: 4,
    };
    static COUNT: Shape = Shape::Integer { min: 0, max: 10 };
    static FLAG: Shape = Shape::Boolean;
    static NAMES: Shape = Shape::List {
        member: &NAME,
        min: 0,
        max: 2,
    };
    static LABELS: Shape = Shape::Map {
        key: &NAME,
        value: &NAME,
    };
    static THING: Shape = Shape::Structure {
        members: &[
            Member {
                name: "name",
                shape: &NAME,
                required: true,
            },
            Member {
                name: "color",
                shape: &COLOR,
                required: false,
            },
            Member {
                name: "count",
                shape: &COUNT,
                required: false,
            },
            Member {
                name: "flag",
                shape: &FLAG,
                required: false,
            },
            Member {
                name: "names",
                shape: &NAMES,
                required: false,
            },
            Member {
                name: "labels",
                shape: &LABELS,
                required: false,
            },
        ],
    };

    #[test]
    fn bodies_are_checked_against_the_shape() {
        // (body, expected exception or None for accepted, message fragment)
        let cases: Vec<(Value, Option<ErrorKind>, &str)> = vec![
            (json!({"name": "a"}), None, ""),
            (json!({"name": "a", "color": "red", "count": 3, "flag": true, "names": ["x"], "labels": {"k": "v"}}), None, ""),
            (json!({"color": "red"}), Some(ErrorKind::ClientException), "Value null at 'name' failed to satisfy constraint: Member must not be null"),
            (json!({"name": null}), Some(ErrorKind::ClientException), "Member must not be null"),
            (json!({"name": 5}), Some(ErrorKind::SerializationException), "TruncatingBigNumber can not be converted to an String"),
            (json!({"name": true}), Some(ErrorKind::SerializationException), "Boolean can not be converted to an String"),
            (json!({"name": "a", "count": "3"}), Some(ErrorKind::SerializationException), "STRING_VALUE can not be converted to an Integer"),
            (json!({"name": "a", "count": 1.5}), Some(ErrorKind::SerializationException), "NUMBER_VALUE can not be converted to an Integer"),
            (json!({"name": "a", "count": 4294967296u64}), Some(ErrorKind::SerializationException), "NUMBER_VALUE can not be converted to an Integer"),
            (json!({"name": "a", "count": 11}), Some(ErrorKind::ClientException), "Value 11 at 'count' failed to satisfy constraint: Member must have value less than or equal to 10"),
            (json!({"name": "a", "count": -1}), Some(ErrorKind::ClientException), "greater than or equal to 0"),
            (json!({"name": "a", "flag": "true"}), Some(ErrorKind::SerializationException), "STRING_VALUE can not be converted to a Boolean"),
            (json!({"name": "a", "color": "green"}), Some(ErrorKind::ClientException), "Value 'green' at 'color' failed to satisfy constraint: Member must satisfy enum value set: [red, blue]"),
            (json!({"name": ""}), Some(ErrorKind::ClientException), "length greater than or equal to 1"),
            (json!({"name": "abcde"}), Some(ErrorKind::ClientException), "length less than or equal to 4"),
            (json!({"name": "a", "names": "x"}), Some(ErrorKind::SerializationException), "STRING_VALUE can not be converted to a List"),
            (json!({"name": "a", "names": {"x": 1}}), Some(ErrorKind::SerializationException), "Start of structure or map found where not expected."),
            (json!({"name": "a", "names": ["a", "b", "c"]}), Some(ErrorKind::ClientException), "length less than or equal to 2"),
            (json!({"name": "a", "names": ["a", null]}), Some(ErrorKind::ClientException), "at 'names.2.member'"),
            (json!({"name": "a", "names": ["a", 7]}), Some(ErrorKind::SerializationException), "TruncatingBigNumber"),
            (json!({"name": "a", "labels": []}), Some(ErrorKind::SerializationException), "Start of list found where not expected"),
            (json!({"name": "a", "labels": {"k": 1}}), Some(ErrorKind::SerializationException), "TruncatingBigNumber"),
            (json!([]), Some(ErrorKind::SerializationException), "Start of list found where not expected"),
        ];
        for (body, expected, fragment) in cases {
            let got = check(&body, &THING, "", ErrorKind::ClientException);
            match (expected, got) {
                (None, Ok(_)) => {}
                (Some(kind), Err(e)) => {
                    assert_eq!(e.kind, kind, "{body}: {e}");
                    assert!(
                        e.message.contains(fragment),
                        "{body}: {} lacks {fragment}",
                        e.message
                    );
                }
                (expected, got) => panic!("{body}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn cleaned_copy_drops_nulls_and_unmodelled_members() {
        let body = json!({"name": "a", "color": null, "bogus": 1, "names": []});
        let cleaned = check(&body, &THING, "", ErrorKind::ClientException).expect("valid");
        assert_eq!(cleaned, json!({"name": "a", "names": []}));
    }

    #[test]
    fn constraint_kind_is_the_callers_choice() {
        let err = check(&json!({}), &THING, "", ErrorKind::InvalidParameterException)
            .expect_err("name is required");
        assert_eq!(err.kind, ErrorKind::InvalidParameterException);
    }

    #[test]
    fn hostile_nesting_is_refused_without_recursing_forever() {
        static DEEP: Shape = Shape::List {
            member: &DEEP,
            min: 0,
            max: u32::MAX,
        };
        let mut v = json!([]);
        for _ in 0..100 {
            v = json!([v]);
        }
        let err = check(&v, &DEEP, "", ErrorKind::ClientException).expect_err("too deep");
        assert_eq!(err.kind, ErrorKind::SerializationException);
    }
}
