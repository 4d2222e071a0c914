//! Integration tests: one binary, one module per area.

mod support;

mod schema;
mod secrets;
mod validate;
