//! Response helpers.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::Value;

use crate::error::ApiError;

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;
/// Response type.
pub type Resp = http::Response<Body>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A response with a content type.
pub fn bytes_response(code: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("valid response")
}

/// A JSON response.
pub fn json_response(code: u16, v: &Value) -> Resp {
    bytes_response(
        code,
        "application/json",
        serde_json::to_vec(v).expect("JSON values serialize"),
    )
}

/// A `Status` error response.
pub fn error_response(e: &ApiError) -> Resp {
    json_response(e.code, &e.to_status())
}

/// A plain text response.
pub fn text_response(code: u16, text: &str) -> Resp {
    bytes_response(code, "text/plain; charset=utf-8", text.to_string())
}
