//! The dashboard at `/`: one small HTML page that fetches queues and recent jobs from the API.

/// The page; its script calls `/v1/queues` and `/v1/jobs`, asking for the token if the API wants one.
pub(crate) const PAGE: &str = include_str!("static/dashboard.html");
