//! `Cmd`: one subprocess as a printable, testable value (program, argv, env changes, stdin, timeout).
//!
//! Modelled on cargo's `ProcessBuilder`: tool wrappers build a `Cmd` without running anything, tests
//! look at its argv, and one engine runs it and turns failure into a [`CmdError`] that carries the
//! argv, the exit status and the tail of stderr.
//!
//! This is the one place of the product that may name `std::process::Command` (the workspace
//! `clippy.toml` bans it elsewhere; only tests that drive the built binaries opt out), so that every
//! subprocess gets the same argv, environment and error handling.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// Longest single stderr line kept in the tail; progress bars and dumps get cut.
const TAIL_LINE_MAX: usize = 400;
/// Arguments longer than this are elided in `Display` (e.g. `--write` payloads); `argv()` stays exact.
const DISPLAY_ARG_MAX: usize = 200;
/// After SIGTERM on timeout, how long the group gets before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// After SIGKILL, how long to wait for the pipes to close before giving up on stragglers.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Which output stream a line came from, for [`Cmd::run_streaming`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A subprocess to run: program and argv (never a shell string), explicit environment changes,
/// working directory, stdin bytes, stdout destination and an optional timeout.
///
/// Secrets must reach the program through [`Cmd::stdin_bytes`] or a 0600 file, never through an
/// argument: argv is visible to every local user and is printed in logs and errors.
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// `Some(v)` sets, `None` removes; applied after clearing.
    env: BTreeMap<OsString, Option<OsString>>,
    /// `Some(keep)`: start from an empty environment plus these variables of the current process.
    env_keep: Option<Vec<OsString>>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    stdout_file: Option<PathBuf>,
    timeout: Option<Duration>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: BTreeMap::new(),
            env_keep: None,
            cwd: None,
            stdin: None,
            stdout_file: None,
            timeout: None,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `key=value` in the child's environment.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes `key` from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Cmd {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts the child from an empty environment that keeps only `keep` (read from this
    /// process when the command runs); [`Cmd::env`] settings still apply on top.
    pub fn env_clear_except(&mut self, keep: &[&str]) -> &mut Cmd {
        self.env_keep = Some(keep.iter().map(OsString::from).collect());
        self
    }

    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Bytes written to the child's stdin (then closed). Without this stdin is `/dev/null`:
    /// nothing virtup runs may wait on a terminal.
    pub fn stdin_bytes(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Sends stdout to `path` (created or truncated when the command runs) instead of capturing it.
    pub fn stdout_file(&mut self, path: impl AsRef<Path>) -> &mut Cmd {
        self.stdout_file = Some(path.as_ref().to_owned());
        self
    }

    /// Bounds the run: on expiry the child's process group gets SIGTERM, then SIGKILL.
    ///
    /// With a timeout the child runs in its own process group so that helpers it started
    /// (qemu under libguestfs, say) die with it. Without one it stays in ours, so a terminal's
    /// Ctrl-C still reaches it.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Cmd {
        self.timeout = Some(timeout);
        self
    }

    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    /// Program and arguments as strings (lossy), exactly as they will be passed; for tests.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The change made to `key`: `Some(Some(v))` set, `Some(None)` removed, `None` untouched.
    pub fn get_env(&self, key: &str) -> Option<Option<&OsStr>> {
        self.env.get(OsStr::new(key)).map(|v| v.as_deref())
    }

    /// The variables kept by [`Cmd::env_clear_except`], or `None` when the environment is inherited.
    pub fn get_env_keep(&self) -> Option<&[OsString]> {
        self.env_keep.as_deref()
    }

    pub fn get_cwd(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    pub fn get_stdin(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    pub fn get_stdout_file(&self) -> Option<&Path> {
        self.stdout_file.as_deref()
    }

    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Runs to completion and captures stdout and stderr; a non-zero exit is an error.
    pub fn output(&self) -> Result<Output, CmdError> {
        self.exec(None, true)
    }

    /// Like [`Cmd::output`], but a non-zero exit is returned in `Output::status`, not as an error.
    pub fn output_unchecked(&self) -> Result<Output, CmdError> {
        self.exec(None, false)
    }

    /// Runs to completion; a non-zero exit is an error.
    pub fn run(&self) -> Result<(), CmdError> {
        self.exec(None, true).map(drop)
    }

    /// Runs to completion, calling `on_line` with each non-empty line of stdout and stderr as it
    /// arrives (`\r` also ends a line, for progress output); a non-zero exit is an error that still
    /// carries the stderr tail.
    pub fn run_streaming(&self, mut on_line: impl FnMut(Stream, &str)) -> Result<Output, CmdError> {
        self.exec(Some(&mut on_line), true)
    }

    /// Runs to completion with stdin, stdout and stderr inherited from this process (the terminal,
    /// for an interactive tool such as ansible-playbook) and returns its exit status, zero or not.
    /// The child stays in our process group, so a terminal's Ctrl-C reaches it too.
    ///
    /// Nothing is captured, so [`Cmd::stdin_bytes`], [`Cmd::stdout_file`] and [`Cmd::timeout`] do
    /// not apply; setting them is a bug (debug builds assert).
    pub fn status(&self) -> Result<ExitStatus, CmdError> {
        self.debug_assert_inherits_stdio();
        let mut child = self
            .base_command()
            .spawn()
            .map_err(|error| self.spawn_error(error))?;
        child.wait().map_err(|error| CmdError::Io {
            cmd: self.to_string(),
            action: "wait for",
            error,
        })
    }

    /// Replaces this process with the command (unix `exec`), with the environment and working
    /// directory of this `Cmd` and the stdio of this process: the terminal, signals and the exit
    /// status belong to the command from then on. Returns only when the exec failed.
    ///
    /// As for [`Cmd::status`], stdin bytes, a stdout file and a timeout do not apply.
    pub fn exec_replace(&self) -> CmdError {
        self.debug_assert_inherits_stdio();
        let error = self.base_command().exec();
        self.spawn_error(error)
    }

    fn debug_assert_inherits_stdio(&self) {
        debug_assert!(
            self.stdin.is_none() && self.stdout_file.is_none() && self.timeout.is_none(),
            "`{self}`: stdin bytes, a stdout file and a timeout need the capturing engine (`output`, `run`)"
        );
    }

    fn spawn_error(&self, error: io::Error) -> CmdError {
        CmdError::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            argv: self.argv(),
            error,
        }
    }

    /// A std `Command` with this `Cmd`'s program, argv, environment and working directory; stdio
    /// and the process group are left as std's defaults (inherited) for the caller to set.
    fn base_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if let Some(keep) = &self.env_keep {
            command.env_clear();
            for key in keep {
                if let Some(value) = std::env::var_os(key) {
                    command.env(key, value);
                }
            }
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        command
    }

    /// The command for the capturing engine: stdin fed or `/dev/null`, stdout piped or to its file,
    /// stderr piped, and its own process group when a timeout may have to kill it.
    fn command(&self) -> Result<Command, CmdError> {
        let mut command = self.base_command();
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        match &self.stdout_file {
            Some(path) => {
                let file = File::create(path).map_err(|error| CmdError::StdoutFile {
                    path: path.clone(),
                    cmd: self.to_string(),
                    error,
                })?;
                command.stdout(file);
            }
            None => {
                command.stdout(Stdio::piped());
            }
        }
        command.stderr(Stdio::piped());
        if self.timeout.is_some() {
            command.process_group(0);
        }
        Ok(command)
    }

    fn exec(
        &self,
        mut on_line: Option<&mut LineSink<'_>>,
        check: bool,
    ) -> Result<Output, CmdError> {
        #[cfg(feature = "script")]
        if let Some(reply) = crate::script::answer(self) {
            return self.scripted(reply, on_line, check);
        }
        let mut child = self
            .command()?
            .spawn()
            .map_err(|error| self.spawn_error(error))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<Event>();

        // Feeding stdin from its own thread: a child that writes a lot before reading must not
        // deadlock against us.
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), self.stdin.clone()) {
            thread::spawn(move || {
                // A child that exits without reading everything is not our error; its status tells.
                let _ = pipe.write_all(&bytes);
            });
        }
        let mut open_pipes = 0;
        if let Some(pipe) = child.stdout.take() {
            open_pipes += 1;
            spawn_reader(pipe, Stream::Stdout, tx.clone());
        }
        if let Some(pipe) = child.stderr.take() {
            open_pipes += 1;
            spawn_reader(pipe, Stream::Stderr, tx.clone());
        }
        {
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = tx.send(Event::Exited(child.wait()));
            });
        }
        drop(tx);

        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let mut status = None;
        let mut read_error = None;
        let mut kill_stage = KillStage::None;
        let mut deadline = self.timeout.map(|t| Instant::now() + t);

        while status.is_none() || open_pipes > 0 {
            let event = match deadline {
                None => match rx.recv() {
                    Ok(event) => event,
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        let (signal, next, grace) = match kill_stage {
                            KillStage::None => {
                                (rustix::process::Signal::TERM, KillStage::Term, TERM_GRACE)
                            }
                            KillStage::Term => {
                                (rustix::process::Signal::KILL, KillStage::Kill, KILL_GRACE)
                            }
                            // Something escaped the group and holds a pipe: stop waiting for it.
                            KillStage::Kill => break,
                        };
                        signal_group(pid, signal);
                        kill_stage = next;
                        deadline = Some(Instant::now() + grace);
                        continue;
                    }
                },
            };
            match event {
                Event::Chunk(stream, bytes) => {
                    if let Some(on_line) = on_line.as_mut() {
                        let buf = &mut partial[stream as usize];
                        buf.extend_from_slice(&bytes);
                        emit_lines(buf, stream, &mut **on_line, false);
                    }
                    match stream {
                        Stream::Stdout => stdout.extend_from_slice(&bytes),
                        Stream::Stderr => stderr.extend_from_slice(&bytes),
                    }
                }
                Event::Closed(stream, result) => {
                    open_pipes -= 1;
                    if let Some(on_line) = on_line.as_mut() {
                        emit_lines(&mut partial[stream as usize], stream, &mut **on_line, true);
                    }
                    if let Err(error) = result {
                        read_error.get_or_insert(error);
                    }
                }
                Event::Exited(result) => status = Some(result),
            }
        }

        let cmd = self.to_string();
        if kill_stage != KillStage::None {
            return Err(CmdError::Timeout {
                cmd,
                argv: self.argv(),
                after: self.timeout.unwrap_or_default(),
                stderr_tail: stderr_tail(&stderr),
            });
        }
        let status = match status {
            Some(Ok(status)) => status,
            Some(Err(error)) => {
                return Err(CmdError::Io {
                    cmd,
                    action: "wait for",
                    error,
                })
            }
            None => {
                return Err(CmdError::Io {
                    cmd,
                    action: "wait for",
                    error: io::Error::other("the waiting thread went away"),
                })
            }
        };
        if let Some(error) = read_error {
            return Err(CmdError::Io {
                cmd,
                action: "read the output of",
                error,
            });
        }
        if check && !status.success() {
            return Err(CmdError::Failed {
                cmd,
                argv: self.argv(),
                status,
                stderr_tail: stderr_tail(&stderr),
            });
        }
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

#[cfg(feature = "script")]
impl Cmd {
    /// A scripted run's reply as the engine returns a real one: lines streamed, a stdout file
    /// written, a non-zero exit an error with the stderr tail.
    fn scripted(
        &self,
        reply: crate::script::Reply,
        on_line: Option<&mut LineSink<'_>>,
        check: bool,
    ) -> Result<Output, CmdError> {
        if let Some(on_line) = on_line {
            for (stream, bytes) in [
                (Stream::Stdout, &reply.stdout),
                (Stream::Stderr, &reply.stderr),
            ] {
                emit_lines(&mut bytes.clone(), stream, &mut *on_line, true);
            }
        }
        let mut stdout = reply.stdout;
        if let Some(path) = &self.stdout_file {
            std::fs::write(path, &stdout).map_err(|error| CmdError::StdoutFile {
                path: path.clone(),
                cmd: self.to_string(),
                error,
            })?;
            stdout.clear();
        }
        let status = ExitStatus::from_raw((reply.code & 0xff) << 8);
        if check && !status.success() {
            return Err(CmdError::Failed {
                cmd: self.to_string(),
                argv: self.argv(),
                status,
                stderr_tail: stderr_tail(&reply.stderr),
            });
        }
        Ok(Output {
            status,
            stdout,
            stderr: reply.stderr,
        })
    }
}

/// Receives the lines of [`Cmd::run_streaming`].
type LineSink<'a> = dyn FnMut(Stream, &str) + 'a;

#[derive(Clone, Copy, PartialEq, Eq)]
enum KillStage {
    None,
    Term,
    Kill,
}

enum Event {
    Chunk(Stream, Vec<u8>),
    Closed(Stream, io::Result<()>),
    Exited(io::Result<ExitStatus>),
}

fn spawn_reader(mut pipe: impl Read + Send + 'static, stream: Stream, tx: mpsc::Sender<Event>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let result = loop {
            match pipe.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if tx.send(Event::Chunk(stream, buf[..n].to_vec())).is_err() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        let _ = tx.send(Event::Closed(stream, result));
    });
}

fn signal_group(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // ESRCH just means the whole group is already gone.
    let _ = rustix::process::kill_process_group(pid, signal);
}

/// Calls `on_line` for each complete line in `buf` and keeps the unfinished rest (all of it at `eof`).
fn emit_lines(buf: &mut Vec<u8>, stream: Stream, on_line: &mut LineSink<'_>, eof: bool) {
    let mut start = 0;
    while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
        let line = String::from_utf8_lossy(&buf[start..start + pos]);
        if !line.trim().is_empty() {
            on_line(stream, line.trim_end());
        }
        start += pos + 1;
    }
    if eof && start < buf.len() {
        let line = String::from_utf8_lossy(&buf[start..]);
        if !line.trim().is_empty() {
            on_line(stream, line.trim_end());
        }
        start = buf.len();
    }
    buf.drain(..start);
}

/// The last [`TAIL_LINES`] non-empty lines of `stderr`, each cut at [`TAIL_LINE_MAX`] characters.
pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|line| match line.char_indices().nth(TAIL_LINE_MAX) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => (*line).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Cmd {
    /// The argv, shell-quoted so that it can be pasted (long arguments are elided); the environment,
    /// stdin and the working directory are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in std::iter::once(&self.program).chain(&self.args).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let arg = arg.to_string_lossy();
            match arg.char_indices().nth(DISPLAY_ARG_MAX) {
                Some((cut, _)) => write!(
                    f,
                    "{}…[{} more bytes]",
                    shell_quote(&arg[..cut]),
                    arg.len() - cut
                )?,
                None => f.write_str(&shell_quote(&arg))?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // stdin may be a secret: only its length is shown.
        f.debug_struct("Cmd")
            .field("argv", &self.to_string())
            .field("env", &self.env)
            .field("env_keep", &self.env_keep)
            .field("cwd", &self.cwd)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("stdout_file", &self.stdout_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Quotes `s` for a POSIX shell, on one line: bare when safe, `'…'` otherwise, and bash's `$'…'`
/// when it holds control characters (so a newline does not break a log line).
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_owned();
    }
    if s.chars().any(char::is_control) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Why running a [`Cmd`] failed. Each message names the command by its quoted argv.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("failed to run `{program}`: {}", io_reason(.error))]
    Spawn {
        program: String,
        argv: Vec<String>,
        error: io::Error,
    },

    #[error("`{cmd}` {}{}", describe_status(.status), tail_suffix(.stderr_tail))]
    Failed {
        cmd: String,
        argv: Vec<String>,
        status: ExitStatus,
        stderr_tail: String,
    },

    #[error("`{cmd}` timed out after {} and was killed{}", describe_duration(.after), tail_suffix(.stderr_tail))]
    Timeout {
        cmd: String,
        argv: Vec<String>,
        after: Duration,
        stderr_tail: String,
    },

    #[error("failed to create `{}` for the output of `{cmd}`: {}", .path.display(), io_reason(.error))]
    StdoutFile {
        path: PathBuf,
        cmd: String,
        error: io::Error,
    },

    #[error("failed to {action} `{cmd}`: {}", io_reason(.error))]
    Io {
        cmd: String,
        action: &'static str,
        error: io::Error,
    },
}

impl CmdError {
    /// The exit code, when the command ran and exited normally with a non-zero status.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CmdError::Failed { status, .. } => status.code(),
            _ => None,
        }
    }

    /// The signal that killed the command, when one did (not counting our own timeout kill).
    pub fn signal(&self) -> Option<i32> {
        match self {
            CmdError::Failed { status, .. } => status.signal(),
            _ => None,
        }
    }

    /// The last lines of the command's stderr, when it ran.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            CmdError::Failed { stderr_tail, .. } | CmdError::Timeout { stderr_tail, .. } => {
                Some(stderr_tail)
            }
            _ => None,
        }
    }

    /// The argv of the command, when it ran or failed to start.
    pub fn argv(&self) -> Option<&[String]> {
        match self {
            CmdError::Spawn { argv, .. }
            | CmdError::Failed { argv, .. }
            | CmdError::Timeout { argv, .. } => Some(argv),
            _ => None,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, CmdError::Timeout { .. })
    }
}

/// An `io::Error` as a lowercase-friendly reason without the "(os error N)" suffix.
pub(crate) fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text)
            .to_owned(),
        None => text,
    }
}

fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("failed with exit status {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => format!("was killed by signal {signal} ({name})"),
            None => format!("was killed by signal {signal}"),
        },
        None => format!("failed with {status}"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

fn describe_duration(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let cases = [
            ("plain-arg_1.qcow2", "plain-arg_1.qcow2"),
            ("file:/tmp/x", "file:/tmp/x"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("$HOME", "'$HOME'"),
            ("a\nb", r"$'a\nb'"),
            ("tab\there 'q'", r"$'tab\there \'q\''"),
        ];
        for (input, want) in cases {
            assert_eq!(shell_quote(input), want, "quoting {input:?}");
        }
    }

    #[test]
    fn tail_keeps_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n\n")).collect();
        let tail = stderr_tail(text.as_bytes());
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[19], "line 30");
        assert_eq!(
            stderr_tail(b"progress 10%\rprogress 100%\r\n"),
            "progress 10%\nprogress 100%"
        );
    }

    #[test]
    fn line_splitting_keeps_partial_lines() {
        let mut seen = Vec::new();
        let mut on_line = |s: Stream, l: &str| seen.push((s, l.to_owned()));
        let mut buf = b"one\ntw".to_vec();
        emit_lines(&mut buf, Stream::Stdout, &mut on_line, false);
        assert_eq!(buf, b"tw");
        buf.extend_from_slice(b"o\r\nthree");
        emit_lines(&mut buf, Stream::Stdout, &mut on_line, true);
        assert!(buf.is_empty());
        let lines: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[test]
    fn io_reason_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
