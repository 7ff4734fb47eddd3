//! virt-up: the classic command line (`virt-up NAME --template T`, `--login`, `--list`, `--delete`, `--init` …) on virtup's core.

fn main() -> std::process::ExitCode {
    virtup_cli::cli::main()
}
