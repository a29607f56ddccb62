//! `GET /`: the dashboard, one self-contained page (dashboard.html: HTML, CSS and script, no
//! external assets) embedded in the binary. It reads the JSON API every few seconds.

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");
