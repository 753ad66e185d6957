//! The OpenAPI 3 document of the API, hand-written in `static/openapi.json` and kept true by a test
//! that checks every route against it and every path in it against the router.

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("static/openapi.json");
