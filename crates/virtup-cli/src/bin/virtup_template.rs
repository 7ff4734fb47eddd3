//! virtup_template binary.
fn main() {}
