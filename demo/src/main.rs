//! `tether-demo`: see the crate description.

fn main() {}
