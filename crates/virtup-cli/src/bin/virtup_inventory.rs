//! virtup_inventory: not built yet (see the README status table); fails loudly instead of pretending.

fn main() {
    eprintln!("virtup_inventory: not implemented yet");
    std::process::exit(2);
}
