//! The public HTTP path: read a request (`request`), find its endpoint (`route`), decide
//! (`handler`), write the answer in place (`response`, `json`).

pub mod handler;
pub mod json;
pub mod request;
pub mod response;
pub mod route;
