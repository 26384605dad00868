//! ECS attribute actions on container instances: PutAttributes,
//! DeleteAttributes, ListAttributes.

use serde_json::{json, Map, Value};

use super::{paginate, Call, Params};
use crate::error::ApiError;
use crate::state::{active_cluster, Request};

/// ECS attribute names: 1-128 of letters, digits, `-_/\.`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/\\.".contains(&b))
}

/// ECS attribute values: 1-128 of letters, digits, `-_./\@: ` (no leading or
/// trailing space).
pub fn valid_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./\\@: ".contains(&b))
}

fn target_type(o: &Map<String, Value>) -> Result<(), ApiError> {
    match o.get("targetType").and_then(Value::as_str) {
        None | Some("container-instance") => Ok(()),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid targetType: {other}. Only container-instance is supported."
        ))),
    }
}

pub async fn put(call: &Call<'_>, p: &Params<'_>, delete: bool) -> Result<Value, ApiError> {
    let list = p
        .opt_array("attributes")?
        .ok_or_else(|| ApiError::invalid("attributes can not be null."))?;
    if list.is_empty() || list.len() > 10 {
        return Err(ApiError::invalid(
            "attributes must have between 1 and 10 items.",
        ));
    }
    let mut parsed = Vec::new();
    for a in list {
        let o = a
            .as_object()
            .ok_or_else(|| ApiError::invalid("Each attribute must be a structure."))?;
        let ap = Params(o);
        let name = ap.req_str("name")?;
        if !valid_name(name) {
            return Err(ApiError::invalid(format!("Invalid attribute name: {name}")));
        }
        let value = ap.opt_str("value")?;
        if let Some(v) = value {
            if !valid_value(v) {
                return Err(ApiError::invalid(format!("Invalid attribute value: {v}")));
            }
        }
        target_type(o)?;
        let target = ap.req_str("targetId")?;
        parsed.push((
            target.to_string(),
            name.to_string(),
            value.map(str::to_string),
        ));
    }
    call.state
        .submit(Request::Attributes {
            cluster: p.opt_str("cluster")?.map(str::to_string),
            attributes: parsed,
            delete,
        })
        .await?;
    Ok(json!({"attributes": list}))
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let max = p.max_results()?;
    match p.req_str("targetType")? {
        "container-instance" => {}
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid targetType: {other}. Only container-instance is supported."
            )))
        }
    }
    let name = p.opt_str("attributeName")?;
    let value = p.opt_str("attributeValue")?;
    if value.is_some() && name.is_none() {
        return Err(ApiError::invalid(
            "attributeValue can only be given with attributeName.",
        ));
    }
    let snap = call.state.snapshot();
    let c = active_cluster(&snap, p.opt_str("cluster")?)?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for i in snap
        .instances
        .values()
        .filter(|i| i.cluster == c.name && i.status != "INACTIVE")
    {
        for a in &i.attributes {
            if name.is_some_and(|n| n != a.name)
                || value.is_some_and(|v| Some(v) != a.value.as_deref())
            {
                continue;
            }
            let mut o =
                json!({"name": a.name, "targetType": "container-instance", "targetId": i.arn});
            if let Some(v) = &a.value {
                o["value"] = json!(v);
            }
            rows.push((format!("{}\n{}", i.arn, a.name), o));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let (page, next) = paginate(keys, p.opt_str("nextToken")?, max)?;
    let out_rows: Vec<&Value> = page
        .iter()
        .filter_map(|k| rows.binary_search_by(|r| r.0.cmp(k)).ok())
        .map(|i| &rows[i].1)
        .collect();
    let mut out = json!({"attributes": out_rows});
    if let Some(n) = next {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_value_table() {
        for (s, name_ok, value_ok) in [
            ("stack", true, true),
            ("ecs.os-type", true, true),
            ("a/b\\c_d-e", true, true),
            ("has space", false, true),
            (" lead", false, false),
            ("user@host:1", false, true),
            ("", false, false),
            ("x=y", false, false),
        ] {
            assert_eq!(valid_name(s), name_ok, "name {s:?}");
            assert_eq!(valid_value(s), value_ok, "value {s:?}");
        }
        assert!(!valid_name(&"a".repeat(129)));
    }
}
