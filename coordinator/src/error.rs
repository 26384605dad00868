//! The ECS error shape every API handler answers with: an exception type
//! (`__type`), a message, and the HTTP status AWS uses for it.

use serde_json::json;

/// An error as the ECS API reports it. Handlers and pure validators return
/// this; the HTTP layer turns it into `{"__type": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The exception types Berth answers with (names are the ECS/AWS `__type`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ClientException,
    InvalidParameterException,
    ClusterNotFoundException,
    ClusterContainsContainerInstancesException,
    ClusterContainsServicesException,
    ClusterContainsTasksException,
    ResourceNotFoundException,
    ResourceInUseException,
    AccessDeniedException,
    UnknownOperationException,
    SerializationException,
    UnrecognizedClientException,
    InvalidSignatureException,
    IncompleteSignatureException,
    MissingAuthenticationTokenException,
    RequestEntityTooLargeException,
    LimitExceededException,
    TargetNotFoundException,
    AttributeLimitExceededException,
    /// SSM: `InvalidActivation`, `InvalidActivationId`.
    InvalidActivation,
    InvalidActivationId,
    /// SSM: invalid request parameters (`InvalidParameters`), filters, tokens.
    InvalidParameters,
    /// AWS model-constraint failure (SSM: "1 validation error detected: ...").
    ValidationException,
    InvalidFilter,
    InvalidNextToken,
    /// ECS: a feature Berth (or the launch type) does not support.
    UnsupportedFeatureException,
    ServiceNotFoundException,
    ServiceNotActiveException,
    ServerException,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ClientException => "ClientException",
            ErrorKind::InvalidParameterException => "InvalidParameterException",
            ErrorKind::ClusterNotFoundException => "ClusterNotFoundException",
            ErrorKind::ClusterContainsContainerInstancesException => {
                "ClusterContainsContainerInstancesException"
            }
            ErrorKind::ClusterContainsServicesException => "ClusterContainsServicesException",
            ErrorKind::ClusterContainsTasksException => "ClusterContainsTasksException",
            ErrorKind::ResourceNotFoundException => "ResourceNotFoundException",
            ErrorKind::ResourceInUseException => "ResourceInUseException",
            ErrorKind::AccessDeniedException => "AccessDeniedException",
            ErrorKind::UnknownOperationException => "UnknownOperationException",
            ErrorKind::SerializationException => "SerializationException",
            ErrorKind::UnrecognizedClientException => "UnrecognizedClientException",
            ErrorKind::InvalidSignatureException => "InvalidSignatureException",
            ErrorKind::IncompleteSignatureException => "IncompleteSignatureException",
            ErrorKind::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            ErrorKind::RequestEntityTooLargeException => "RequestEntityTooLargeException",
            ErrorKind::LimitExceededException => "LimitExceededException",
            ErrorKind::TargetNotFoundException => "TargetNotFoundException",
            ErrorKind::AttributeLimitExceededException => "AttributeLimitExceededException",
            ErrorKind::InvalidActivation => "InvalidActivation",
            ErrorKind::InvalidActivationId => "InvalidActivationId",
            ErrorKind::InvalidParameters => "InvalidParameters",
            ErrorKind::ValidationException => "ValidationException",
            ErrorKind::InvalidFilter => "InvalidFilter",
            ErrorKind::InvalidNextToken => "InvalidNextToken",
            ErrorKind::UnsupportedFeatureException => "UnsupportedFeatureException",
            ErrorKind::ServiceNotFoundException => "ServiceNotFoundException",
            ErrorKind::ServiceNotActiveException => "ServiceNotActiveException",
            ErrorKind::ServerException => "ServerException",
        }
    }

    /// HTTP status AWS answers with for this exception.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidSignatureException
            | ErrorKind::MissingAuthenticationTokenException
            | ErrorKind::AccessDeniedException => 403,
            ErrorKind::RequestEntityTooLargeException => 413,
            ErrorKind::ServerException => 500,
            _ => 400,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameterException, message)
    }
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ClientException, message)
    }
    pub fn cluster_not_found() -> Self {
        Self::new(ErrorKind::ClusterNotFoundException, "Cluster not found.")
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ServerException, message)
    }

    /// The JSON body for this error.
    pub fn body(&self) -> serde_json::Value {
        json!({"__type": self.kind.as_str(), "message": self.message})
    }
}
