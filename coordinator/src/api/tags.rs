//! ECS tagging actions: TagResource, UntagResource, ListTagsForResource, for
//! clusters, task definitions, tasks and container instances.

use serde_json::{json, Value};

use super::{render, Call, Params};
use crate::error::ApiError;
use crate::model::Tag;
use crate::state::{Request, StateHandle};

pub async fn tag(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let arn = p.req_str("resourceArn")?;
    if p.raw("tags").is_none() {
        return Err(ApiError::invalid("tags can not be null."));
    }
    let tags = p.tags("tags")?;
    call.state
        .submit(Request::TagResource {
            arn: arn.to_string(),
            tags,
        })
        .await?;
    Ok(json!({}))
}

pub async fn untag(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let arn = p.req_str("resourceArn")?;
    let keys = p
        .opt_str_list("tagKeys")?
        .ok_or_else(|| ApiError::invalid("tagKeys can not be null."))?;
    for k in &keys {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(ApiError::invalid(
                "Tag keys must be between 1 and 128 characters.",
            ));
        }
    }
    call.state
        .submit(Request::UntagResource {
            arn: arn.to_string(),
            keys: keys.iter().map(|s| s.to_string()).collect(),
        })
        .await?;
    Ok(json!({}))
}

fn current_tags(state: &StateHandle, arn: &str) -> Result<Vec<Tag>, ApiError> {
    crate::state::tags_of(&state.snapshot(), arn)
}

pub fn list(call: &Call<'_>, p: &Params<'_>) -> Result<Value, ApiError> {
    let arn = p.req_str("resourceArn")?;
    let tags = current_tags(call.state, arn)?;
    Ok(json!({"tags": render::tags(&tags)}))
}
