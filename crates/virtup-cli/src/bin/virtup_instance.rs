//! virtup_instance binary.
fn main() {}
