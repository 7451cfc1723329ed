//! The HTTP API's one error type: what went wrong is logged here, and the client gets an
//! [`ApiError`] body with the matching status, never internal details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use burrow_proto::signal::{ApiError, ErrorCode};
use tracing::error;

use crate::db::DbError;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A refusal the client should see as it is (401, 403, 404, 409, 400).
    #[error("{0}")]
    Client(ApiError),
    /// Storage failed; the client sees a bare 500.
    #[error("storage: {0}")]
    Db(#[from] DbError),
}

impl AppError {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client(ApiError::new(code, message))
    }

    /// 401 with the message every unauthenticated request gets (it does not say whether the
    /// token or login was missing, malformed, unknown or expired).
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "missing or invalid bearer token or login",
        )
    }

    /// The body the client sees.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::Client(e) => e.clone(),
            Self::Db(_) => ApiError::new(ErrorCode::Internal, "internal error"),
        }
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self::Client(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Db(e) = &self {
            error!(error = %e, "request failed");
        }
        let body = self.to_api_error();
        let status = StatusCode::from_u16(body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
