//! The SSM subset Berth serves for on-prem registration (`AmazonSSM.*`):
//! CreateActivation, DescribeActivations, DeleteActivation. Shapes and error
//! names follow botocore's SSM model (PascalCase members).

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{paginate, Call, Params};
use crate::error::{ApiError, ErrorKind};
use crate::model::Tag;
use crate::state::{now_secs, Outcome, Request};

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidParameters, msg)
}

/// A model-constraint failure, worded as AWS's front end words it.
fn constraint(value: &str, member: &str, rule: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ValidationException,
        format!(
            "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {rule}"
        ),
    )
}

/// SSM tags: `[{"Key": .., "Value": ..}]`, key 1-128, value 0-256, at most 1000.
pub fn parse_tags(v: Option<&Value>) -> Result<Vec<Tag>, ApiError> {
    parse_key_value_tags(v, None, true, &|m| invalid(m))
}

/// A `[{"Key", "Value"}]` tag list as SSM and EventBridge send it: key
/// 1-128 characters, value at most 256, keys unique, at most `max` tags,
/// `aws:` keys refused when `reserve_aws`; errors built by `err` (each API
/// has its own error type).
pub fn parse_key_value_tags(
    v: Option<&Value>,
    max: Option<usize>,
    reserve_aws: bool,
    err: &dyn Fn(String) -> ApiError,
) -> Result<Vec<Tag>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(vec![]);
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::new(ErrorKind::SerializationException, "Tags must be a list."))?;
    if let Some(max) = max.filter(|m| list.len() > *m) {
        return Err(err(format!("A resource can have at most {max} tags.")));
    }
    let mut out: Vec<Tag> = Vec::new();
    for t in list {
        let key = t.get("Key").and_then(Value::as_str);
        let value = t.get("Value").and_then(Value::as_str);
        let (Some(key), Some(value)) = (key, value) else {
            return Err(err("Each tag needs a Key and a Value.".into()));
        };
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(err(
                "Tag keys must be 1-128 characters and values at most 256 characters.".into(),
            ));
        }
        if reserve_aws && key.to_ascii_lowercase().starts_with("aws:") {
            return Err(err("Tag keys beginning with aws: are reserved.".into()));
        }
        if out.iter().any(|e| e.key == key) {
            return Err(err(format!("Duplicate tag key: {key}")));
        }
        out.push(Tag {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

fn parse_time(p: &Params<'_>, key: &str) -> Result<Option<f64>, ApiError> {
    match p.raw(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("Invalid {key}."))),
        Some(Value::String(s)) => {
            if let Ok(f) = s.parse::<f64>() {
                return Ok(Some(f));
            }
            OffsetDateTime::parse(s, &Rfc3339)
                .map(|t| Some(t.unix_timestamp_nanos() as f64 / 1e9))
                .map_err(|_| invalid(format!("Invalid {key}: {s}")))
        }
        Some(_) => Err(ApiError::new(
            ErrorKind::SerializationException,
            format!("{key} must be a timestamp."),
        )),
    }
}

fn opt_len(p: &Params<'_>, key: &str, max: usize) -> Result<Option<String>, ApiError> {
    match p.opt_str(key)? {
        None => Ok(None),
        Some(s) if s.chars().count() <= max => Ok(Some(s.to_string())),
        Some(s) => Err(constraint(
            &format!("'{s}'"),
            &lower_first(key),
            &format!("Member must have length less than or equal to {max}"),
        )),
    }
}

pub async fn dispatch(
    call: &Call<'_>,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let p = Params(body);
    match action {
        "CreateActivation" => create(call, &p).await,
        "DescribeActivations" => describe(call, &p),
        "DeleteActivation" => delete(call, &p).await,
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperationException,
            format!("Operation {action} is not supported by this endpoint."),
        )),
    }
}

/// `IamRole` → `iamRole`, as AWS names members in validation messages.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn create(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let iam_role = p
        .opt_str("IamRole")?
        .ok_or_else(|| constraint("null", "iamRole", "Member must not be null"))?;
    if iam_role.chars().count() > 64 {
        return Err(constraint(
            &format!("'{iam_role}'"),
            "iamRole",
            "Member must have length less than or equal to 64",
        ));
    }
    if iam_role.is_empty() {
        return Err(invalid("IamRole must not be empty."));
    }
    let limit = p.opt_int("RegistrationLimit")?.unwrap_or(1);
    if limit < 1 {
        return Err(constraint(
            &format!("'{limit}'"),
            "registrationLimit",
            "Member must have value greater than or equal to 1",
        ));
    }
    if limit > 1000 {
        return Err(constraint(
            &format!("'{limit}'"),
            "registrationLimit",
            "Member must have value less than or equal to 1000",
        ));
    }
    let req = Request::CreateActivation {
        iam_role: iam_role.to_string(),
        description: opt_len(p, "Description", 256)?,
        default_instance_name: opt_len(p, "DefaultInstanceName", 256)?,
        registration_limit: limit as u32,
        expiration: parse_time(p, "ExpirationDate")?,
        tags: parse_tags(p.raw("Tags"))?,
    };
    let (_, outcome) = call.state.submit(req).await?;
    let Outcome::Activation { id, code } = outcome else {
        return Err(ApiError::server("unexpected outcome"));
    };
    Ok(json!({"ActivationId": id, "ActivationCode": code}))
}

fn describe(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = match p.opt_int("MaxResults")? {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(n) => {
            return Err(constraint(
                &format!("'{n}'"),
                "maxResults",
                "Member must have value between 1 and 50",
            ))
        }
    };
    let mut filters: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in p.opt_array("Filters")?.map(|v| v.as_slice()).unwrap_or(&[]) {
        let key = f.get("FilterKey").and_then(Value::as_str).unwrap_or("");
        if !matches!(key, "ActivationIds" | "DefaultInstanceName" | "IamRole") {
            return Err(ApiError::new(
                ErrorKind::InvalidFilter,
                format!("Invalid filter key: {key}"),
            ));
        }
        let values: Vec<&str> = f
            .get("FilterValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        filters.push((key, values));
    }
    let snap = call.state.snapshot();
    let now = now_secs();
    let matching: Vec<String> = snap
        .activations
        .values()
        .filter(|a| {
            filters.iter().all(|(k, vals)| {
                let field = match *k {
                    "ActivationIds" => Some(a.id.as_str()),
                    "DefaultInstanceName" => a.default_instance_name.as_deref(),
                    _ => Some(a.iam_role.as_str()),
                };
                vals.is_empty() || field.is_some_and(|f| vals.contains(&f))
            })
        })
        .map(|a| a.id.clone())
        .collect();
    let (page, next) = paginate(matching, p.opt_str("NextToken")?, max).map_err(|_| {
        ApiError::new(
            ErrorKind::InvalidNextToken,
            "The specified token isn't valid.",
        )
    })?;
    let list: Vec<Value> = page
        .iter()
        .filter_map(|id| snap.activations.get(id))
        .map(|a| {
            let mut o = json!({
                "ActivationId": a.id,
                "IamRole": a.iam_role,
                "RegistrationLimit": a.registration_limit,
                "RegistrationsCount": a.registrations_count,
                "ExpirationDate": a.expiration,
                "Expired": now >= a.expiration,
                "CreatedDate": a.created,
                "Tags": a.tags.iter().map(|t| json!({"Key": t.key, "Value": t.value})).collect::<Vec<_>>(),
            });
            if let Some(d) = &a.description {
                o["Description"] = json!(d);
            }
            if let Some(n) = &a.default_instance_name {
                o["DefaultInstanceName"] = json!(n);
            }
            o
        })
        .collect();
    let mut out = json!({"ActivationList": list});
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// SSM activation ids are lowercase UUIDs.
pub fn valid_activation_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

async fn delete(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let id = p
        .opt_str("ActivationId")?
        .ok_or_else(|| constraint("null", "activationId", "Member must not be null"))?;
    if !valid_activation_id(id) {
        return Err(constraint(
            &format!("'{id}'"),
            "activationId",
            "Member must satisfy regular expression pattern: ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        ));
    }
    call.state
        .submit(Request::DeleteActivation { id: id.to_string() })
        .await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_id_table() {
        for (id, ok) in [
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", true),
            ("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", false),
            ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", false),
            ("", false),
            ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", false),
        ] {
            assert_eq!(valid_activation_id(id), ok, "{id}");
        }
    }

    #[test]
    fn tags_table() {
        let ok = json!([{"Key": "env", "Value": "prod"}]);
        assert_eq!(parse_tags(Some(&ok)).unwrap().len(), 1);
        let reserved = json!([{"Key": "aws:x", "Value": "v"}]);
        assert_eq!(
            parse_tags(Some(&reserved)).unwrap_err().kind,
            ErrorKind::InvalidParameters
        );
        let dup = json!([{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]);
        assert!(parse_tags(Some(&dup)).is_err());
        let missing = json!([{"Key": "a"}]);
        assert!(parse_tags(Some(&missing)).is_err());
        assert!(parse_tags(None).unwrap().is_empty());
    }
}
