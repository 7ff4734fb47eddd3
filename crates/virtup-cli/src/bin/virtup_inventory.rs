//! virtup_inventory binary.
fn main() {}
