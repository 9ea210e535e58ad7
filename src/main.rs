//! The `drove` binary: one executable for every component.
#![forbid(unsafe_code)]

fn main() {}
