//! The public HTTP path: a connection's conversation (`conn`: every complete request in the bytes
//! read, and what the socket does next), read a request (`request`), find its endpoint (`route`),
//! decide (`handler`, with `cors` for browsers), write the answer in place (`response`, `json`).

pub mod conn;
pub mod cors;
pub mod handler;
pub mod json;
pub mod request;
pub mod response;
pub mod route;
