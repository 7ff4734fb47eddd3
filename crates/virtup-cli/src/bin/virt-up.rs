//! virt-up: not built yet (see the README status table); fails loudly instead of pretending.

fn main() {
    eprintln!("virt-up: not implemented yet");
    std::process::exit(2);
}
