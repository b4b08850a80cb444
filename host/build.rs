//! Builds the platform's functions for wasm32-wasip2 so the binary can embed them.
fn main() {}
