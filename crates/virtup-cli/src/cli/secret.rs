//! Passwords for `--password` / `--root-password`: from a file (`file:PATH`) or stdin (`-`), never from argv.
//!
//! A value on the command line is visible to every local user in `ps` and `/proc/*/cmdline`, and
//! lands in shell history, so virt-up's `--password PASSWORD` is refused here with the two ways
//! that keep it private. `file:PATH` reads the first line of the file, as virt-builder's
//! `--root-password file:PATH` does.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// How a password option was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(std::path::PathBuf),
    Stdin,
}

/// Why a password option was refused; the message never contains the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub option: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{o} takes `file:PATH` (first line of a file) or `-` (read from stdin), not the password itself: \
             a password on the command line is visible to every local user in `ps` and stays in shell history; \
             e.g. `{o} file:$HOME/.pw` or `{o} -`",
            o = self.option
        )
    }
}

/// Parses the option's value without ever echoing it.
pub fn parse(option: &'static str, value: &str) -> Result<SecretSource, Refused> {
    if value == "-" {
        return Ok(SecretSource::Stdin);
    }
    match value.strip_prefix("file:") {
        Some(path) if !path.is_empty() => Ok(SecretSource::File(path.into())),
        _ => Err(Refused { option }),
    }
}

/// Reads the secret. `prompt` is shown (with echo off) when stdin is a terminal.
pub fn read(option: &str, source: &SecretSource, prompt: &str) -> Result<String> {
    let value = match source {
        SecretSource::File(path) => first_line_of(path)
            .with_context(|| format!("failed to read {option} from `{}`", path.display()))?,
        SecretSource::Stdin => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                prompt_hidden(prompt)
                    .with_context(|| format!("failed to read {option} from the terminal"))?
            } else {
                let mut line = String::new();
                stdin
                    .lock()
                    .read_line(&mut line)
                    .with_context(|| format!("failed to read {option} from stdin"))?;
                trim_newline(line)
            }
        }
    };
    if value.is_empty() {
        bail!("{option} is empty");
    }
    Ok(value)
}

fn first_line_of(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

/// Prompts on stderr and reads one line from the terminal with echo off, restoring it however
/// reading ends.
fn prompt_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    tcsetattr(&stdin, OptionalActions::Flush, &quiet).context("cannot turn echo off")?;
    struct Restore<'a>(&'a std::io::Stdin, rustix::termios::Termios);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = rustix::termios::tcsetattr(self.0, OptionalActions::Flush, &self.1);
        }
    }
    let _restore = Restore(&stdin, saved);
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(trim_newline(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_and_stdin_are_accepted() {
        assert_eq!(parse("--password", "-"), Ok(SecretSource::Stdin));
        assert_eq!(
            parse("--password", "file:/run/pw"),
            Ok(SecretSource::File("/run/pw".into()))
        );
        for literal in ["hunter2", "file:", "password:hunter2", ""] {
            let e = parse("--root-password", literal).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("--root-password takes `file:PATH`"),
                "{msg}"
            );
            assert!(
                literal.is_empty() || !msg.contains(literal) || literal == "file:",
                "{msg}"
            );
        }
    }

    #[test]
    fn a_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        let v = read("--password", &SecretSource::File(p.clone()), "").unwrap();
        assert_eq!(v, "s3cret");
        std::fs::write(&p, "\n").unwrap();
        let e = read("--password", &SecretSource::File(p), "").unwrap_err();
        assert_eq!(e.to_string(), "--password is empty");
    }
}
