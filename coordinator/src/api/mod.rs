//! ECS API handlers: parse an action's JSON input (strict about types, as the
//! ECS service is), send changes to the state owner, and render responses from
//! snapshots in botocore's shapes. One submodule per ECS area.

pub mod attributes;
pub mod capacity;
pub mod clusters;
pub mod instances;
pub mod render;
pub mod services;
pub mod tags;
pub mod taskdefs;
pub mod tasks;

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorKind};
use crate::model::Tag;
use crate::state::StateHandle;

/// What every handler gets: the state owner and the request's signing region.
pub struct Call<'a> {
    pub state: &'a StateHandle,
    pub region: &'a str,
    pub account_id: &'a str,
}

/// Dispatches an ECS action (the part after `AmazonEC2ContainerServiceV20141113.`).
pub async fn dispatch_ecs(
    call: &Call<'_>,
    action: &str,
    body: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let p = Params(body);
    match action {
        "CreateCluster" => clusters::create(call, &p).await,
        "DescribeClusters" => clusters::describe(call, &p),
        "ListClusters" => clusters::list(call, &p),
        "DeleteCluster" => clusters::delete(call, &p).await,
        "RegisterTaskDefinition" => taskdefs::register(call, body).await,
        "DescribeTaskDefinition" => taskdefs::describe(call, &p),
        "ListTaskDefinitions" => taskdefs::list(call, &p),
        "ListTaskDefinitionFamilies" => taskdefs::list_families(call, &p),
        "DeregisterTaskDefinition" => taskdefs::deregister(call, &p).await,
        "RunTask" => tasks::run(call, &p).await,
        "StartTask" => tasks::start(call, &p).await,
        "StopTask" => tasks::stop(call, &p).await,
        "DescribeTasks" => tasks::describe(call, &p),
        "ListTasks" => tasks::list(call, &p),
        "ListContainerInstances" => instances::list(call, &p),
        "DescribeContainerInstances" => instances::describe(call, &p),
        "DeregisterContainerInstance" => instances::deregister(call, &p).await,
        "UpdateContainerInstancesState" => instances::update_state(call, &p).await,
        "PutAttributes" => attributes::put(call, &p, false).await,
        "DeleteAttributes" => attributes::put(call, &p, true).await,
        "ListAttributes" => attributes::list(call, &p),
        "DeleteTaskDefinitions" => taskdefs::delete(call, &p).await,
        "CreateService" => services::create(call, &p).await,
        "UpdateService" => services::update(call, &p).await,
        "DeleteService" => services::delete(call, &p).await,
        "ListServices" => services::list(call, &p),
        "DescribeServices" => services::describe(call, &p),
        "CreateCapacityProvider" => capacity::create(call, &p).await,
        "UpdateCapacityProvider" => capacity::update(call, &p).await,
        "DeleteCapacityProvider" => capacity::delete(call, &p).await,
        "DescribeCapacityProviders" => capacity::describe(call, &p),
        "PutClusterCapacityProviders" => capacity::put_cluster(call, &p).await,
        "TagResource" => tags::tag(call, &p).await,
        "UntagResource" => tags::untag(call, &p).await,
        "ListTagsForResource" => tags::list(call, &p),
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperationException,
            format!("Operation {action} is not supported by this endpoint."),
        )),
    }
}

fn wrong_type(key: &str, want: &str) -> ApiError {
    ApiError::new(
        ErrorKind::SerializationException,
        format!("Unexpected value for '{key}': expected {want}."),
    )
}

/// Typed access to a JSON request object. A `null` member counts as absent;
/// a member of the wrong JSON type is a `SerializationException`, as the
/// service's deserializer reports it.
pub struct Params<'a>(pub &'a Map<String, Value>);

impl<'a> Params<'a> {
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(wrong_type(key, "a string")),
        }
    }
    pub fn req_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.opt_str(key)?
            .ok_or_else(|| ApiError::invalid(format!("{key} can not be null.")))
    }
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "an integer")),
            Some(_) => Err(wrong_type(key, "an integer")),
        }
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "a boolean")),
        }
    }
    pub fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(wrong_type(key, "a list")),
        }
    }
    pub fn opt_object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, ApiError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(wrong_type(key, "a structure")),
        }
    }
    pub fn opt_str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>, ApiError> {
        match self.opt_array(key)? {
            None => Ok(None),
            Some(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| wrong_type(key, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
    /// `maxResults` within 1..=100 (default 100).
    pub fn max_results(&self) -> Result<usize, ApiError> {
        match self.opt_int("maxResults")? {
            None => Ok(100),
            Some(n) if (1..=100).contains(&n) => Ok(n as usize),
            Some(_) => Err(ApiError::invalid("maxResults must be between 1 and 100.")),
        }
    }
    /// ECS tags (`[{key, value}]`), validated as ECS does.
    pub fn tags(&self, key: &str) -> Result<Vec<Tag>, ApiError> {
        match self.raw(key) {
            None => Ok(vec![]),
            Some(v) => Ok(crate::taskdef::validate_tags(v)?
                .into_iter()
                .map(|t| Tag {
                    key: t.key,
                    value: t.value,
                })
                .collect()),
        }
    }
}

/// Pages through sorted `items`. The token is the hex of the last item
/// returned, so a page boundary survives concurrent inserts.
pub fn paginate(
    items: Vec<String>,
    next_token: Option<&str>,
    max: usize,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let start = match next_token {
        None => 0,
        Some(tok) => {
            let bytes = hex::decode(tok).map_err(|_| ApiError::invalid("Invalid nextToken."))?;
            let after =
                String::from_utf8(bytes).map_err(|_| ApiError::invalid("Invalid nextToken."))?;
            items.partition_point(|i| i.as_str() <= after.as_str())
        }
    };
    let page: Vec<String> = items.iter().skip(start).take(max).cloned().collect();
    let next = if start + page.len() < items.len() {
        page.last().map(|l| hex::encode(l.as_bytes()))
    } else {
        None
    };
    Ok((page, next))
}

/// Checks an `include` list against the allowed values and reports whether
/// `want` is present.
pub fn includes(p: &Params<'_>, allowed: &[&str], want: &str) -> Result<bool, ApiError> {
    let list = p.opt_str_list("include")?.unwrap_or_default();
    for v in &list {
        if !allowed.contains(v) {
            return Err(ApiError::invalid(format!(
                "Invalid include value: {v}. Valid values are {}.",
                allowed.join(", ")
            )));
        }
    }
    Ok(list.contains(&want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paginate_walks_every_item_once() {
        let items: Vec<String> = (0..7).map(|i| format!("arn:{i}")).collect();
        let mut seen = vec![];
        let mut tok: Option<String> = None;
        loop {
            let (page, next) = paginate(items.clone(), tok.as_deref(), 3).unwrap();
            seen.extend(page);
            match next {
                Some(t) => tok = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(paginate(items, Some("zz"), 3).is_err());
    }

    #[test]
    fn params_type_table() {
        let body = serde_json::json!({"s": "x", "n": 5, "b": true, "l": ["a"], "z": null});
        let m = body.as_object().unwrap();
        let p = Params(m);
        assert_eq!(p.opt_str("s").unwrap(), Some("x"));
        assert_eq!(p.opt_str("z").unwrap(), None);
        assert_eq!(p.opt_str("missing").unwrap(), None);
        assert_eq!(
            p.opt_str("n").unwrap_err().kind,
            ErrorKind::SerializationException
        );
        assert_eq!(p.opt_int("n").unwrap(), Some(5));
        assert_eq!(
            p.opt_int("s").unwrap_err().kind,
            ErrorKind::SerializationException
        );
        assert_eq!(p.opt_bool("b").unwrap(), Some(true));
        assert_eq!(p.opt_str_list("l").unwrap(), Some(vec!["a"]));
        assert_eq!(
            p.req_str("missing").unwrap_err().kind,
            ErrorKind::InvalidParameterException
        );
    }
}
