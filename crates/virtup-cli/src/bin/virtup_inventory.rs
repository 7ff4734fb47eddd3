//! virtup_inventory: Ansible's dynamic inventory of what virtup made (`--list`, `--host NAME`); also refreshes virt-up's inventory.yaml.

use std::process::ExitCode;

use clap::Parser;

/// Lists virtup's templates and instances for Ansible: `ansible-inventory -i virtup_inventory --graph`.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Print every group and host with its variables (what Ansible asks for).
    #[arg(long, conflicts_with = "host")]
    list: bool,
    /// Print the variables of one host (`{}` when there is no such host).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.list && args.host.is_none() {
        eprintln!("virtup_inventory: pass --list or --host NAME (see --help)");
        return ExitCode::from(2);
    }
    match virtup_cli::inventory::main(args.host.as_deref()) {
        Ok(doc) => {
            // Anything on stderr shows as an error on every ansible command: stdout only.
            if virtup_ansible::inventory::emit(&doc) != 0 {
                eprintln!("virtup_inventory: cannot write the inventory to stdout");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtup_inventory: {e:#}");
            ExitCode::FAILURE
        }
    }
}
