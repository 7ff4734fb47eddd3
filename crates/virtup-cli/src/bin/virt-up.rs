//! virt-up binary.
fn main() {}
