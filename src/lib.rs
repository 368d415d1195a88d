//! Shared helpers for the workspace-level benchmarks and tests.
