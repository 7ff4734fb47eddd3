//! The `virt-up` command line: virt-up's flags, parsed with clap, run by the same operations as the Ansible modules.
//!
//! Every command that changes something builds the typed options of `virtup_ops::template` or
//! `virtup_ops::instance` and converges them (`operate.rs`), so the CLI validates and behaves exactly
//! as `virtup_template` / `virtup_instance` do. What is only the CLI's lives here: flag parsing,
//! secrets from files or stdin, confirmation, progress, tables, `--init`.

mod adopt;
mod create;
mod delete;
mod init;
mod list;
mod login;
mod operate;
pub(crate) mod playbook;
pub mod progress;
pub mod secret;
mod show;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory, Parser};
use virtup_core::Paths;

use self::progress::Verbosity;
use self::secret::SecretSource;

/// Exit status of a usage error (clap's, and a password given on the command line).
pub const EXIT_USAGE: u8 = 2;

const USAGE: &str = "\
virt-up [--name] <NAME> [--template <TEMPLATE>] [create options]
       virt-up [--name] <NAME> --login [--sftp | --command \"<COMMAND>\"]
       virt-up [--name] <NAME> --console
       virt-up [--name] <NAME> --adopt [--yes]
       virt-up [--name] <NAME> --playbook <PLAYBOOK>
       virt-up [--name] <NAME> --delete | --delete --all
       virt-up --init [--force]
       virt-up --list [--all]
       virt-up --show-templates | --show-paths";

const AFTER_HELP: &str = "\
Passwords never go on the command line: give `file:PATH` (the file's first line) or `-` (one line
from stdin; on a terminal a prompt without echo). With both options `-`, the root password is read first.

Configuration: settings.cfg and templates.d/*.cfg in /etc/virt-up and $VIRTUP_CONFIG_HOME
(default $XDG_CONFIG_HOME/virt-up), the same files the virtup_template/virtup_instance modules read.
Data: $VIRTUP_DATA_HOME (default $XDG_DATA_HOME/virt-up). Hypervisor: $LIBVIRT_DEFAULT_URI
(default qemu:///system).";

/// Create virtual machines quickly from templates on libvirt: virt-up's command line, on virtup's core.
#[derive(Debug, Parser)]
#[command(
    name = "virt-up",
    version,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    group(ArgGroup::new("mode").multiple(false)),
)]
pub struct Args {
    /// Instance name
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Instance name (same as the positional NAME)
    #[arg(
        short = 'n',
        long = "name",
        value_name = "NAME",
        conflicts_with = "name"
    )]
    pub name_flag: Option<String>,

    /// Write commented settings.cfg and example templates.d/*.cfg to the user config dir
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub init: bool,
    /// List instances (NAME TEMPLATE STATE ADDRESS USER)
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub list: bool,
    /// Show the template definitions of the config files
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub show_templates: bool,
    /// Show configuration and data paths
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub show_paths: bool,
    /// Delete the instance (or the template NAME, refused while clones use it)
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub delete: bool,
    /// Log in to the instance with ssh (starting it if needed)
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub login: bool,
    /// Attach to the running instance's serial console (virsh console; leave with Ctrl+]): its boot
    /// messages and a login prompt, also when SSH does not answer
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub console: bool,
    /// Make an instance virt-up 2.2.0 made virtup's: checked against virt-up's records, its host key
    /// replaced offline and pinned (see docs/migrate-from-virt-up.md)
    #[arg(long, group = "mode", help_heading = "Commands")]
    pub adopt: bool,
    /// Run an Ansible playbook on the instance through virtup's dynamic inventory
    #[arg(
        long,
        group = "mode",
        value_name = "PLAYBOOK",
        help_heading = "Commands"
    )]
    pub playbook: Option<PathBuf>,

    /// Template name (default: NAME)
    #[arg(
        short = 't',
        long,
        value_name = "TEMPLATE",
        help_heading = "Create options"
    )]
    pub template: Option<String>,
    /// Root password as `file:PATH` or `-` (default: random)
    #[arg(long, value_name = "file:PATH|-", help_heading = "Create options")]
    pub root_password: Option<String>,
    /// Login user name (default: `username` in the config, else virt)
    #[arg(long, value_name = "USER", help_heading = "Create options")]
    pub user: Option<String>,
    /// Login user's password as `file:PATH` or `-` (default: random)
    #[arg(long, value_name = "file:PATH|-", help_heading = "Create options")]
    pub password: Option<String>,
    /// Instance disk size, e.g. 20G (default: the template's size)
    #[arg(long, value_name = "SIZE", help_heading = "Create options")]
    pub size: Option<String>,
    /// Instance memory in MiB (default: the config's, else 512)
    #[arg(long, value_name = "MEMORY", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Create options")]
    pub memory: Option<u64>,
    /// Instance vCPUs (default: the config's, else 1)
    #[arg(long, value_name = "VCPUS", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Create options")]
    pub vcpus: Option<u32>,
    /// Instance graphics (default: the config's, else none)
    #[arg(long, value_name = "GRAPHICS", value_parser = clap::builder::PossibleValuesParser::new(virtup_ops::instance::GRAPHICS), help_heading = "Create options")]
    pub graphics: Option<String>,
    /// DNS domain of the instance's host name
    #[arg(long, value_name = "DOMAIN", help_heading = "Create options")]
    pub dns_domain: Option<String>,
    /// Fixed IPv4 address: a DHCP reservation on the instance's network, removed with it
    #[arg(long, value_name = "ADDRESS", help_heading = "Create options")]
    pub address: Option<String>,
    /// Build the template only (NAME, or --template), clone nothing
    #[arg(long, help_heading = "Create options")]
    pub no_clone: bool,
    /// Leave the instance out of the inventory
    #[arg(long, help_heading = "Create options")]
    pub no_inventory: bool,

    /// With --login: use sftp instead of ssh
    #[arg(
        long,
        requires = "login",
        conflicts_with = "command",
        help_heading = "Login options"
    )]
    pub sftp: bool,
    /// With --login: run COMMAND instead of a shell; its exit status is virt-up's
    #[arg(
        long,
        value_name = "COMMAND",
        requires = "login",
        help_heading = "Login options"
    )]
    pub command: Option<String>,

    /// With --list: include templates; with --delete: every instance, then every template
    #[arg(long)]
    pub all: bool,
    /// Answer yes to confirmation questions (needed for --delete and --adopt without a terminal)
    #[arg(long)]
    pub yes: bool,
    /// With --init: overwrite existing files
    #[arg(long, requires = "init")]
    pub force: bool,
    /// Show errors only
    #[arg(long, conflicts_with = "debug")]
    pub quiet: bool,
    /// Show the drivers' remarks, and every cause of an error
    #[arg(long)]
    pub debug: bool,
}

/// Options of creating an instance (or, with --no-clone, building a template).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    pub name: String,
    pub template: Option<String>,
    pub root_password: Option<SecretSource>,
    pub user: Option<String>,
    pub password: Option<SecretSource>,
    pub size: Option<String>,
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub graphics: Option<String>,
    pub dns_domain: Option<String>,
    pub address: Option<std::net::Ipv4Addr>,
    pub inventory: bool,
}

/// What to do, checked for consistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateOpts),
    /// `--no-clone`: the template named by `template` (or NAME).
    BuildTemplate(CreateOpts),
    Login {
        name: String,
        sftp: bool,
        command: Option<String>,
    },
    Console {
        name: String,
    },
    Adopt {
        name: String,
    },
    Playbook {
        name: String,
        playbook: PathBuf,
    },
    Delete {
        name: String,
    },
    DeleteAll,
    Init {
        force: bool,
    },
    List {
        all: bool,
    },
    ShowTemplates,
    ShowPaths,
}

/// How the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    pub verbosity: Verbosity,
    pub yes: bool,
}

impl Global {
    pub fn quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }
}

fn usage_error(msg: impl std::fmt::Display) -> clap::Error {
    Args::command().error(ErrorKind::ArgumentConflict, msg)
}

impl Args {
    /// The command these flags ask for, or a usage error (exit 2).
    pub fn to_command(&self) -> Result<Command, clap::Error> {
        let name = self.name.clone().or_else(|| self.name_flag.clone());
        let create_flags: Vec<&str> = [
            ("--template", self.template.is_some()),
            ("--root-password", self.root_password.is_some()),
            ("--user", self.user.is_some()),
            ("--password", self.password.is_some()),
            ("--size", self.size.is_some()),
            ("--memory", self.memory.is_some()),
            ("--vcpus", self.vcpus.is_some()),
            ("--graphics", self.graphics.is_some()),
            ("--dns-domain", self.dns_domain.is_some()),
            ("--address", self.address.is_some()),
            ("--no-clone", self.no_clone),
            ("--no-inventory", self.no_inventory),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        let mode = [
            ("--init", self.init),
            ("--list", self.list),
            ("--show-templates", self.show_templates),
            ("--show-paths", self.show_paths),
            ("--delete", self.delete),
            ("--login", self.login),
            ("--console", self.console),
            ("--adopt", self.adopt),
            ("--playbook", self.playbook.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, set)| set.then_some(flag));
        if let (Some(mode), Some(flag)) = (mode, create_flags.first()) {
            return Err(usage_error(format!(
                "`{flag}` creates an instance and cannot be used with `{mode}`"
            )));
        }
        if self.all && !(self.list || self.delete) {
            return Err(usage_error("`--all` goes with `--list` or `--delete`"));
        }
        let takes_no_name = |mode: &str| -> Result<(), clap::Error> {
            match &name {
                Some(n) => Err(usage_error(format!("`{mode}` takes no NAME (got `{n}`)"))),
                None => Ok(()),
            }
        };
        let needs_name = |mode: &str| -> Result<String, clap::Error> {
            name.clone()
                .ok_or_else(|| usage_error(format!("`{mode}` needs the instance NAME")))
        };
        Ok(match mode {
            Some("--init") => {
                takes_no_name("--init")?;
                Command::Init { force: self.force }
            }
            Some("--list") => {
                takes_no_name("--list")?;
                Command::List { all: self.all }
            }
            Some("--show-templates") => {
                takes_no_name("--show-templates")?;
                Command::ShowTemplates
            }
            Some("--show-paths") => {
                takes_no_name("--show-paths")?;
                Command::ShowPaths
            }
            Some("--delete") if self.all => {
                if let Some(n) = &name {
                    return Err(usage_error(format!(
                        "`--delete --all` deletes everything; it takes no NAME (got `{n}`)"
                    )));
                }
                Command::DeleteAll
            }
            Some("--delete") => Command::Delete {
                name: needs_name("--delete")?,
            },
            Some("--login") => Command::Login {
                name: needs_name("--login")?,
                sftp: self.sftp,
                command: self.command.clone(),
            },
            Some("--console") => Command::Console {
                name: needs_name("--console")?,
            },
            Some("--adopt") => Command::Adopt {
                name: needs_name("--adopt")?,
            },
            Some("--playbook") => Command::Playbook {
                name: needs_name("--playbook")?,
                playbook: self.playbook.clone().unwrap_or_default(),
            },
            _ => {
                let opts = CreateOpts {
                    name: name.clone().unwrap_or_default(),
                    template: self.template.clone(),
                    root_password: self
                        .root_password
                        .as_deref()
                        .map(|v| secret::parse("--root-password", v))
                        .transpose()
                        .map_err(|e| Args::command().error(ErrorKind::ValueValidation, e))?,
                    user: self.user.clone(),
                    password: self
                        .password
                        .as_deref()
                        .map(|v| secret::parse("--password", v))
                        .transpose()
                        .map_err(|e| Args::command().error(ErrorKind::ValueValidation, e))?,
                    size: self.size.clone(),
                    memory: self.memory,
                    vcpus: self.vcpus,
                    graphics: self.graphics.clone(),
                    dns_domain: self.dns_domain.clone(),
                    address: self
                        .address
                        .as_deref()
                        .map(|a| virtup_core::validate::ipv4_address("--address", a))
                        .transpose()
                        .map_err(|e| Args::command().error(ErrorKind::ValueValidation, e))?,
                    inventory: !self.no_inventory,
                };
                if self.no_clone {
                    if opts.address.is_some() {
                        return Err(usage_error(
                            "`--address` is an instance's; `--no-clone` builds a template only",
                        ));
                    }
                    if opts.name.is_empty() && opts.template.is_none() {
                        return Err(usage_error(
                            "`--no-clone` needs the template: NAME or --template",
                        ));
                    }
                    Command::BuildTemplate(opts)
                } else if name.is_none() {
                    return Err(Args::command().error(
                        ErrorKind::MissingRequiredArgument,
                        "give the instance NAME, or one of --init, --list, --show-templates, --show-paths",
                    ));
                } else {
                    Command::Create(opts)
                }
            }
        })
    }

    pub fn global(&self) -> Global {
        Global {
            verbosity: if self.quiet {
                Verbosity::Quiet
            } else if self.debug {
                Verbosity::Debug
            } else {
                Verbosity::Normal
            },
            yes: self.yes,
        }
    }
}

/// The whole program: parse, run, report. Usage errors exit 2, failures 1; `--login` and
/// `--playbook` exit with the status of ssh / ansible-playbook.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let command = match args.to_command() {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let global = args.global();
    progress::install(Box::new(progress::Terminal::new(global.verbosity)));
    let result = run(&command, &global);
    progress::finish();
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, global.verbosity == Verbosity::Debug);
            ExitCode::FAILURE
        }
    }
}

/// One readable line; `--debug` shows every cause on its own line.
fn report_error(e: &anyhow::Error, debug: bool) {
    if debug {
        // The chain, without the backtrace `{:?}` adds when RUST_BACKTRACE is set.
        eprintln!("virt-up: error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        return;
    }
    let text = format!("{e:#}");
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if lines.next().is_some() {
        eprintln!("virt-up: error: {first} (more with --debug)");
    } else {
        eprintln!("virt-up: error: {first}");
    }
}

/// Runs a parsed command.
pub fn run(command: &Command, global: &Global) -> Result<ExitCode> {
    let paths = Paths::from_env()?;
    match command {
        Command::Create(opts) => create::create(&paths, opts, global),
        Command::BuildTemplate(opts) => create::build_template(&paths, opts, global),
        Command::Login {
            name,
            sftp,
            command,
        } => login::login(&paths, name, *sftp, command.as_deref(), global),
        Command::Console { name } => login::console(&paths, name),
        Command::Adopt { name } => adopt::adopt(&paths, name, global),
        Command::Playbook { name, playbook } => playbook::playbook(&paths, name, playbook, global),
        Command::Delete { name } => delete::delete(&paths, name, global),
        Command::DeleteAll => delete::delete_all(&paths, global),
        Command::Init { force } => init::init(&paths, *force, global),
        Command::List { all } => list::list(&paths, *all, global),
        Command::ShowTemplates => show::templates(&paths, global),
        Command::ShowPaths => show::paths(&paths),
    }
}

/// Asks before destroying `what`, unless `--yes`; without a terminal to ask on, refuses.
pub fn confirm(what: &str, global: &Global) -> Result<()> {
    confirm_to("delete", what, global)
}

/// Asks before `action` (a verb: `delete`, `adopt`) is done to `what`, unless `--yes`.
pub fn confirm_to(action: &str, what: &str, global: &Global) -> Result<()> {
    if global.yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "refusing to {action} {what} without confirmation: stdin is not a terminal; pass --yes"
        );
    }
    eprint!("virt-up: about to {action} {what}. Continue? [y/N] ");
    let mut answer = String::new();
    stdin.read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not confirmed; nothing was changed"),
    }
}

/// Prints a line of normal output on stdout, unless `--quiet`.
pub fn say(global: &Global, text: impl std::fmt::Display) {
    if !global.quiet() {
        println!("{text}");
    }
}

/// A warning on stderr, unless `--quiet`.
pub fn warn(global: &Global, text: impl std::fmt::Display) {
    if !global.quiet() {
        eprintln!("virt-up: warning: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str]) -> Result<Command, clap::Error> {
        let args = Args::try_parse_from(std::iter::once("virt-up").chain(argv.iter().copied()))?;
        args.to_command()
    }

    #[test]
    fn an_address_is_an_instances_ipv4_address() {
        let Command::Create(o) = cmd(&["web1", "--address", "192.168.122.50"]).unwrap() else {
            panic!("a create")
        };
        assert_eq!(o.address, Some("192.168.122.50".parse().unwrap()));
        for (argv, says) in [
            (
                &["web1", "--address", "192.168.122"][..],
                "not an IPv4 address",
            ),
            (&["web1", "--address", "127.0.0.2"][..], "loopback"),
            (
                &["web1", "--no-clone", "--address", "192.168.122.5"][..],
                "template only",
            ),
            (
                &["--list", "--address", "192.168.122.5"][..],
                "cannot be used with `--list`",
            ),
        ] {
            let e = cmd(argv).unwrap_err().to_string();
            assert!(e.contains(says), "{argv:?}: {e}");
        }
    }

    #[test]
    fn the_seed_usage_lines_parse() {
        let create = cmd(&["web1", "--template", "debian-12", "--memory", "1024"]).unwrap();
        let Command::Create(o) = create else {
            panic!("{create:?}")
        };
        assert_eq!(
            (
                o.name.as_str(),
                o.template.as_deref(),
                o.memory,
                o.inventory
            ),
            ("web1", Some("debian-12"), Some(1024), true)
        );
        assert_eq!(
            cmd(&["--name", "web1", "--no-inventory"]).unwrap(),
            Command::Create(CreateOpts {
                name: "web1".into(),
                inventory: false,
                ..CreateOpts::default()
            })
        );
        assert_eq!(
            cmd(&["web1", "--login", "--command", "hostname"]).unwrap(),
            Command::Login {
                name: "web1".into(),
                sftp: false,
                command: Some("hostname".into())
            }
        );
        assert_eq!(
            cmd(&["web1", "--console"]).unwrap(),
            Command::Console {
                name: "web1".into()
            }
        );
        assert_eq!(
            cmd(&["web1", "--playbook", "site.yml"]).unwrap(),
            Command::Playbook {
                name: "web1".into(),
                playbook: "site.yml".into()
            }
        );
        assert_eq!(
            cmd(&["web1", "--delete", "--yes"]).unwrap(),
            Command::Delete {
                name: "web1".into()
            }
        );
        assert_eq!(cmd(&["--delete", "--all"]).unwrap(), Command::DeleteAll);
        assert_eq!(
            cmd(&["--init", "--force"]).unwrap(),
            Command::Init { force: true }
        );
        assert_eq!(
            cmd(&["--list", "--all"]).unwrap(),
            Command::List { all: true }
        );
        assert_eq!(cmd(&["--show-templates"]).unwrap(), Command::ShowTemplates);
        assert_eq!(cmd(&["--show-paths"]).unwrap(), Command::ShowPaths);
        assert!(matches!(
            cmd(&["--no-clone", "--template", "debian-12"]).unwrap(),
            Command::BuildTemplate(CreateOpts { template: Some(t), .. }) if t == "debian-12"
        ));
    }

    #[test]
    fn inconsistent_flags_are_usage_errors() {
        for argv in [
            &["--list", "--init"][..],
            &["--list", "web1"],
            &["--login"],
            &["--console"],
            &["web1", "--console", "--login"],
            &["web1", "--console", "--memory", "1024"],
            &["web1", "--sftp"],
            &["web1", "--login", "--sftp", "--command", "x"],
            &["--delete", "--all", "web1"],
            &["--list", "--memory", "1024"],
            &["web1", "--all"],
            &["web1", "--force"],
            &["web1", "--memory", "0"],
            &["web1", "--graphics", "sdl"],
            &["web1", "--quiet", "--debug"],
            &["web1", "--name", "web2"],
            &[],
        ] {
            let e = cmd(argv).expect_err(&format!("{argv:?} should be refused"));
            assert_eq!(e.exit_code(), 2, "{argv:?}: {e}");
        }
    }

    #[test]
    fn a_password_on_the_command_line_is_refused_without_echoing_it() {
        let e = cmd(&["web1", "--password", "hunter2"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("--password takes `file:PATH`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let Command::Create(o) =
            cmd(&["web1", "--root-password", "file:/pw", "--password", "-"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.root_password, Some(SecretSource::File("/pw".into())));
        assert_eq!(o.password, Some(SecretSource::Stdin));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
