//! The HTTP server: AWS JSON 1.1 (`POST /` with `X-Amz-Target`) for the ECS,
//! SSM and EventBridge (`AWSEvents.`, scheduled rules) APIs, and the agent channel under `/agent/v1/`.
//!
//! Request handling, in AWS's order: body size limit (1 MiB; larger bodies get
//! HTTP 413 `RequestEntityTooLargeException` before anything is parsed), SigV4
//! verification, target dispatch (`UnknownOperationException`), JSON parse
//! (`SerializationException`; serde_json's recursion limit bounds nesting),
//! then the action. Members a request carries that the service model does not
//! know are ignored, as the AWS JSON front end does (botocore never sends
//! them). Internal errors are logged in full and answered as a
//! generic `ServerException`; a panicking handler is caught and answered the
//! same way, so no request can take the process down.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent_channel;
use crate::api::{self, Call};
use crate::error::{ApiError, ErrorKind};
use crate::sigv4::{self, AccessKey, SignedRequest};
use crate::state::StateHandle;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
const ECS_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const SSM_PREFIX: &str = "AmazonSSM.";
const EVENTS_PREFIX: &str = "AWSEvents.";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("accept: {0}")]
    Accept(#[from] std::io::Error),
}

/// Everything a request handler needs.
pub struct App {
    pub state: StateHandle,
    pub keys: Vec<AccessKey>,
    pub account_id: String,
    /// Flips to `true` at shutdown so held long-polls answer at once.
    pub shutdown: watch::Receiver<bool>,
}

type Body = Full<Bytes>;

fn json_response(status: u16, body: &Value, request_id: &str) -> Response<Body> {
    bytes_response(
        status,
        serde_json::to_vec(body).unwrap_or_default(),
        request_id,
    )
}

fn bytes_response(status: u16, bytes: Vec<u8>, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

fn error_response(e: &ApiError, request_id: &str) -> Response<Body> {
    let e = if e.kind == ErrorKind::ServerException {
        tracing::error!(request_id, error = %e.message, "internal error");
        ApiError::server("An internal error occurred. Try again later.")
    } else {
        e.clone()
    };
    let mut resp = json_response(e.kind.status(), &e.body(), request_id);
    if let Ok(v) = HeaderValue::from_str(e.kind.as_str()) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

async fn read_body(body: Incoming, declared: Option<u64>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::RequestEntityTooLargeException,
            format!("Request body must be at most {MAX_BODY} bytes."),
        )
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    ErrorKind::SerializationException,
                    "Could not read the request body.",
                ))
            }
        }
    }
}

/// Parses an AWS JSON 1.1 body; an empty body is an empty object.
pub fn parse_json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            ErrorKind::SerializationException,
            "Start of structure or map expected.",
        )),
        Err(e) => Err(ApiError::new(
            ErrorKind::SerializationException,
            format!("Malformed JSON: {e}"),
        )),
    }
}

async fn aws(app: &App, parts: &http::request::Parts, body: Bytes) -> Result<Value, ApiError> {
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (service, prefix) = if target.starts_with(ECS_PREFIX) {
        (Some("ecs"), ECS_PREFIX)
    } else if target.starts_with(SSM_PREFIX) {
        (Some("ssm"), SSM_PREFIX)
    } else if target.starts_with(EVENTS_PREFIX) {
        (Some("events"), EVENTS_PREFIX)
    } else {
        (None, "")
    };
    let verified = sigv4::verify(
        &SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: &body,
        },
        &app.keys,
        service,
        SystemTime::now(),
    )?;
    if service.is_none() {
        return Err(ApiError::new(
            ErrorKind::UnknownOperationException,
            if target.is_empty() {
                "Missing X-Amz-Target header.".to_string()
            } else {
                format!("Unknown operation {target}.")
            },
        ));
    }
    let action = &target[prefix.len()..];
    let input = parse_json_object(&body)?;
    let call = Call {
        state: &app.state,
        region: &verified.region,
        account_id: &app.account_id,
    };
    tracing::debug!(action = target, "api call");
    if service == Some("ecs") {
        api::dispatch_ecs(&call, action, &input).await
    } else if service == Some("events") {
        crate::events::dispatch(&call, action, &input).await
    } else {
        crate::ssm::dispatch(&call, action, &input).await
    }
}

async fn route(app: Arc<App>, req: Request<Incoming>, request_id: &str) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = parts.uri.path().to_string();
    if parts.method == Method::GET && (path == "/ping" || path == "/healthz") {
        return json_response(200, &serde_json::json!({"status": "ok"}), request_id);
    }
    if parts.method != Method::POST {
        return error_response(
            &ApiError::new(
                ErrorKind::UnknownOperationException,
                "Only POST is supported.",
            ),
            request_id,
        );
    }
    let body = match read_body(body, declared).await {
        Ok(b) => b,
        Err(e) => return error_response(&e, request_id),
    };
    let auth = parts
        .headers
        .get(berth_api::INSTANCE_AUTH_HEADER)
        .and_then(|v| v.to_str().ok());
    let channel = match path.as_str() {
        berth_api::REGISTER_PATH => Some(agent_channel::register(&app.state, &body).await),
        berth_api::POLL_PATH => {
            Some(agent_channel::poll(&app.state, auth, &body, app.shutdown.clone()).await)
        }
        berth_api::REPORT_PATH => Some(agent_channel::report(&app.state, auth, &body).await),
        _ => None,
    };
    if let Some((status, bytes)) = channel {
        let mut resp = bytes_response(status, bytes, request_id);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    if path != "/" {
        return error_response(
            &ApiError::new(
                ErrorKind::UnknownOperationException,
                format!("No such path {path}."),
            ),
            request_id,
        );
    }
    match aws(&app, &parts, body).await {
        Ok(v) => json_response(200, &v, request_id),
        Err(e) => error_response(&e, request_id),
    }
}

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let rid = request_id.clone();
    match AssertUnwindSafe(route(app, req, &rid)).catch_unwind().await {
        Ok(resp) => Ok(resp),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(request_id, panic = %what, "handler panicked");
            Ok(error_response(
                &ApiError::server(format!("handler panicked: {what}")),
                &request_id,
            ))
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (at most 10 s).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HttpError> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers cannot hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Transient (e.g. EMFILE): keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = service_fn(move |req| handle(app.clone(), req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing");
        }
    }
    Ok(())
}
