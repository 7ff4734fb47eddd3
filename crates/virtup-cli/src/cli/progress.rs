//! Progress of long work (template builds, clones, boots, waits) for the `virt-up` command line.
//!
//! The module drivers call [`stage`] and [`note`] at the points a human waits on. Nothing is shown
//! unless a reporter is installed, which only `virt-up` does: the Ansible modules stay silent
//! (stdout carries their one JSON document) and keep their stderr lines exactly as before.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Receives the drivers' progress.
pub trait Reporter: Send + Sync {
    /// A new stage of long work begins (`template `x`: build generation 1`).
    fn stage(&self, text: &str);
    /// A one-off remark (how long the host-side work took).
    fn note(&self, text: &str);
    /// The current stage is over (before other output): print it as done.
    fn end_stage(&self);
    /// The work is over: stop redrawing and clear the status line.
    fn finish(&self);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the process-wide reporter; `false` when one was installed before.
pub fn install(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// Reports a stage; nothing when no reporter is installed.
pub fn stage(text: &str) {
    if let Some(r) = REPORTER.get() {
        r.stage(text);
    }
}

/// Reports a remark; without a reporter it goes to stderr, where the modules always put it.
pub fn note(text: &str) {
    match REPORTER.get() {
        Some(r) => r.note(text),
        None => eprintln!("{text}"),
    }
}

/// Ends the current stage's status line, so other output starts on a line of its own.
pub fn finish_line() {
    if let Some(r) = REPORTER.get() {
        r.end_stage();
    }
}

/// Ends the progress display, if any.
pub fn finish() {
    if let Some(r) = REPORTER.get() {
        r.finish();
    }
}

/// The operations' reporter for `virt-up`: stages and notes go to the progress display.
pub struct Progress;

impl virtup_ops::Reporter for Progress {
    fn stage(&self, text: &str) {
        stage(text);
    }
    fn note(&self, text: &str) {
        note(text);
    }
}

/// How much the command line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    Normal,
    /// Also the drivers' remarks.
    Debug,
}

struct Current {
    text: String,
    since: Instant,
}

/// Stages on stderr: on a terminal one status line redrawn with a spinner and the time spent,
/// elsewhere one plain line per stage (for logs).
pub struct Terminal {
    verbosity: Verbosity,
    tty: bool,
    current: Arc<Mutex<Option<Current>>>,
    stop: Arc<AtomicBool>,
}

const SPINNER: &[char] = &['|', '/', '-', '\\'];

impl Terminal {
    pub fn new(verbosity: Verbosity) -> Terminal {
        let tty = std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        let t = Terminal {
            verbosity,
            tty,
            current: Arc::new(Mutex::new(None)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        if tty && verbosity != Verbosity::Quiet {
            let current = Arc::clone(&t.current);
            let stop = Arc::clone(&t.stop);
            std::thread::spawn(move || {
                let mut tick = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(c) = lock(&current).as_ref() {
                        draw(SPINNER[tick % SPINNER.len()], c);
                    }
                    tick += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        t
    }

    fn close_line(&self, current: &mut Option<Current>) {
        if let Some(c) = current.take() {
            if self.tty {
                eprint!("\r\x1b[2K");
                eprintln!("  {} ({})", c.text, elapsed(c.since));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn draw(spin: char, c: &Current) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{spin} {} ({})", c.text, elapsed(c.since));
    let _ = err.flush();
}

/// `42s`, `3m05s`.
pub fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Reporter for Terminal {
    fn stage(&self, text: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| c.text == text) {
            return;
        }
        self.close_line(&mut current);
        if !self.tty {
            eprintln!("virt-up: {text}");
        }
        let c = Current {
            text: text.to_owned(),
            since: Instant::now(),
        };
        if self.tty {
            draw(SPINNER[0], &c);
        }
        *current = Some(c);
    }

    fn note(&self, text: &str) {
        if self.verbosity != Verbosity::Debug {
            return;
        }
        let current = lock(&self.current);
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        eprintln!("virt-up: {text}");
        if let (true, Some(c)) = (self.tty, current.as_ref()) {
            draw(SPINNER[0], c);
        }
    }

    fn end_stage(&self) {
        let mut current = lock(&self.current);
        self.close_line(&mut current);
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // What follows (an ssh session, an error) starts on a clean line; a stage worth keeping
        // was already closed with `end_stage`.
        if lock(&self.current).take().is_some() && self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
