//! Scripted tool runs for the fast test layer: a test answers chosen commands instead of running them.
//!
//! The operations build images with tools that cannot run without the lab (virt-builder,
//! virt-customize, virt-sysprep need an appliance; virt-install needs a real hypervisor). Their
//! tests install a [`Script`] on the test's thread: every [`Cmd`] the capturing engine would run
//! is offered to it first; a [`Reply`] (exit code, output, and whatever files the test's answer
//! writes, as the tool would) stands for the run, `None` lets the real program run (qemu-img,
//! xorriso). Each offered command is kept, so the test can assert the argv and environment.
//!
//! Compiled only with the `script` feature, which only dev-dependencies turn on, so the binaries
//! `cargo build --bins` makes (scripts/build) have no hook. Test builds unify features; there,
//! nothing but a test's [`Script::install`] on its own thread activates it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::Cmd;

/// What a scripted run printed and how it exited.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Reply {
    /// Exit 0, no output.
    pub fn ok() -> Reply {
        Reply::default()
    }

    /// Exit 0 with `stdout`.
    pub fn stdout(stdout: impl Into<Vec<u8>>) -> Reply {
        Reply {
            stdout: stdout.into(),
            ..Reply::default()
        }
    }

    /// Exit `code` with `stderr`, as a failing tool.
    pub fn fail(code: i32, stderr: impl Into<Vec<u8>>) -> Reply {
        Reply {
            code,
            stderr: stderr.into(),
            ..Reply::default()
        }
    }
}

type Answer = Box<dyn FnMut(&Cmd) -> Option<Reply>>;
/// The commands a script answered, shared by the installed answer and its [`Script`].
type Runs = Rc<RefCell<Vec<Cmd>>>;

thread_local! {
    static ANSWER: RefCell<Option<(Answer, Runs)>> = const { RefCell::new(None) };
}

/// The installed script; dropping it lets commands run for real again.
pub struct Script {
    runs: Runs,
}

impl Script {
    /// Answers the commands this thread runs from now on with `answer`.
    pub fn install(answer: impl FnMut(&Cmd) -> Option<Reply> + 'static) -> Script {
        let runs = Rc::new(RefCell::new(Vec::new()));
        ANSWER.with(|a| *a.borrow_mut() = Some((Box::new(answer), runs.clone())));
        Script { runs }
    }

    /// The commands answered so far, in order (those that ran for real are not kept).
    pub fn runs(&self) -> Vec<Cmd> {
        self.runs.borrow().clone()
    }

    /// The argv of the answered commands whose program is `program`.
    pub fn argvs_of(&self, program: &str) -> Vec<Vec<String>> {
        self.runs
            .borrow()
            .iter()
            .filter(|c| c.get_program() == program)
            .map(Cmd::argv)
            .collect()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        ANSWER.with(|a| *a.borrow_mut() = None);
    }
}

/// The scripted reply for `cmd`, if a script is installed and answers it.
pub(crate) fn answer(cmd: &Cmd) -> Option<Reply> {
    ANSWER.with(|a| {
        // Taken out while the answer runs, so that an answer may itself run commands for real.
        let (mut answer, runs) = a.borrow_mut().take()?;
        let reply = answer(cmd);
        if reply.is_some() {
            runs.borrow_mut().push(cmd.clone());
        }
        *a.borrow_mut() = Some((answer, runs));
        reply
    })
}
