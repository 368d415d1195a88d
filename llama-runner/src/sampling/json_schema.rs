//! JSON Schema to GBNF: not implemented yet; every schema is an error saying so.
use crate::error::{Error, Result};

/// The deepest schema nesting accepted.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// Converts a JSON Schema to GBNF. Not implemented yet: always [`Error::JsonSchema`].
pub fn json_schema_to_gbnf(schema: &str) -> Result<String> {
    let _ = schema;
    Err(Error::JsonSchema { path: String::new(), problem: "JSON Schema conversion is not implemented yet".into() })
}
