//! `Cmd` against real tiny programs: output, failures, signals, timeouts, stdin, env, streaming.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use virtup_guest::{Cmd, CmdError, Stream};

fn sh(script: &str) -> Cmd {
    let mut cmd = Cmd::new("sh");
    cmd.args(["-c", script]);
    cmd
}

#[test]
fn success_captures_both_streams() {
    let out = sh("printf hello; printf oops >&2").output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello");
    assert_eq!(out.stderr, b"oops");
    Cmd::new("true").run().unwrap();
}

#[test]
fn failure_carries_argv_status_and_stderr_tail() {
    let err = sh("echo one >&2; echo two >&2; exit 3")
        .output()
        .unwrap_err();
    assert_eq!(err.exit_code(), Some(3));
    assert_eq!(err.stderr_tail(), Some("one\ntwo"));
    assert_eq!(
        err.argv().unwrap(),
        ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]
    );
    assert_eq!(
        err.to_string(),
        "`sh -c 'echo one >&2; echo two >&2; exit 3'` failed with exit status 3: one\ntwo"
    );
    let err = Cmd::new("false").run().unwrap_err();
    assert_eq!(err.to_string(), "`false` failed with exit status 1");
}

#[test]
fn failure_keeps_only_the_last_twenty_lines() {
    let err = sh("i=1; while [ $i -le 50 ]; do echo line $i >&2; i=$((i+1)); done; exit 1")
        .run()
        .unwrap_err();
    let tail: Vec<&str> = err.stderr_tail().unwrap().lines().collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.first(), Some(&"line 31"));
    assert_eq!(tail.last(), Some(&"line 50"));
}

#[test]
fn unchecked_output_returns_the_status() {
    let out = sh("echo partial; exit 4").output_unchecked().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(out.stdout, b"partial\n");
}

#[test]
fn death_by_signal_is_named() {
    let err = sh("kill -9 $$").run().unwrap_err();
    assert_eq!(err.signal(), Some(9));
    assert_eq!(err.exit_code(), None);
    assert_eq!(
        err.to_string(),
        "`sh -c 'kill -9 $$'` was killed by signal 9 (SIGKILL)"
    );
}

#[test]
fn spawn_failure_names_the_program() {
    let err = Cmd::new("virtup-no-such-program")
        .arg("x")
        .run()
        .unwrap_err();
    assert!(matches!(err, CmdError::Spawn { .. }));
    assert_eq!(
        err.to_string(),
        "failed to run `virtup-no-such-program`: No such file or directory"
    );
}

#[test]
fn status_returns_the_exit_status_without_failing() {
    // stdout and stderr are the test's own: these scripts print nothing.
    assert_eq!(sh("exit 3").status().unwrap().code(), Some(3));
    assert!(Cmd::new("true").status().unwrap().success());
}

#[test]
fn status_applies_env_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    // Exit codes say which check failed, since nothing is captured.
    let status = sh(r#"[ "$VIRTUP_TEST_SET" = "a b" ] || exit 10
        [ -z "${HOME+set}" ] || exit 11
        [ "$(pwd -P)" = "$0" ] || exit 12"#)
    .arg(&canonical)
    .env("VIRTUP_TEST_SET", "a b")
    .env_remove("HOME")
    .cwd(dir.path())
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(0));

    let status = sh(r#"[ -z "${HOME+set}" ] || exit 10
        [ "$ONLY" = this ] || exit 11"#)
    .env_clear_except(&["PATH"])
    .env("ONLY", "this")
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn status_spawn_failure_names_the_program() {
    let err = Cmd::new("virtup-no-such-program")
        .arg("x")
        .status()
        .unwrap_err();
    assert!(matches!(err, CmdError::Spawn { .. }));
    assert_eq!(err.argv().unwrap(), ["virtup-no-such-program", "x"]);
    assert_eq!(
        err.to_string(),
        "failed to run `virtup-no-such-program`: No such file or directory"
    );
}

/// Only failures are tried: a successful exec would replace the test process itself.
#[test]
fn exec_replace_failure_returns_an_error_naming_the_program() {
    let err = Cmd::new("virtup-no-such-program").arg("x").exec_replace();
    assert!(matches!(err, CmdError::Spawn { .. }));
    assert_eq!(err.argv().unwrap(), ["virtup-no-such-program", "x"]);
    assert_eq!(
        err.to_string(),
        "failed to run `virtup-no-such-program`: No such file or directory"
    );
    // A program that exists but cannot be run (a directory) is refused too, and we are still here.
    let dir = tempfile::tempdir().unwrap();
    let err = Cmd::new(dir.path()).exec_replace();
    assert!(
        err.to_string()
            .starts_with(&format!("failed to run `{}`: ", dir.path().display())),
        "{err}"
    );
}

#[test]
fn stdin_is_fed_and_closed() {
    let out = Cmd::new("cat").stdin_bytes("secret\n").output().unwrap();
    assert_eq!(out.stdout, b"secret\n");
    // More than a pipe buffer each way at once: must not deadlock.
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let out = Cmd::new("cat").stdin_bytes(big.clone()).output().unwrap();
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);
    // Without stdin bytes, stdin is /dev/null rather than our terminal.
    let out = Cmd::new("cat").output().unwrap();
    assert!(out.stdout.is_empty());
}

#[test]
fn env_changes_are_explicit() {
    let out = sh(r#"printf '%s|%s' "$VIRTUP_TEST_SET" "${HOME-unset}""#)
        .env("VIRTUP_TEST_SET", "a b")
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"a b|unset");

    let out = Cmd::new("env")
        .env_clear_except(&["PATH", "VIRTUP_SURELY_UNSET_VARIABLE"])
        .env("ONLY", "this")
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    lines.sort();
    assert_eq!(lines, ["ONLY", "PATH"]);
}

#[test]
fn cwd_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let out = Cmd::new("pwd").cwd(dir.path()).output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        Path::new(printed.trim()).canonicalize().unwrap(),
        dir.path().canonicalize().unwrap()
    );
}

#[test]
fn stdout_can_go_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let out = sh("printf to-file; printf to-err >&2")
        .stdout_file(&path)
        .output()
        .unwrap();
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr, b"to-err");
    assert_eq!(fs::read(&path).unwrap(), b"to-file");

    let err = Cmd::new("true")
        .stdout_file(dir.path().join("missing-dir/out"))
        .run()
        .unwrap_err();
    assert!(err.to_string().starts_with("failed to create `"), "{err}");
    assert!(err
        .to_string()
        .ends_with("for the output of `true`: No such file or directory"));
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!(
        "sleep 60 & echo $! > {}; echo started >&2; wait",
        pid_file.display()
    );
    let started = Instant::now();
    let err = sh(&script)
        .timeout(Duration::from_millis(500))
        .run()
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        err.to_string()
            .contains("timed out after 500ms and was killed: started"),
        "{err}"
    );
    // The background `sleep` held our pipes; it must be gone too, not just its parent.
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || !is_alive(&pid)),
        "grandchild {pid} survived the timeout"
    );
}

#[test]
fn timeout_escalates_to_sigkill() {
    let started = Instant::now();
    let err = sh("trap '' TERM; sleep 60")
        .timeout(Duration::from_millis(200))
        .run()
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn fast_commands_beat_their_timeout() {
    let out = sh("echo quick")
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"quick\n");
}

#[test]
fn streaming_forwards_lines_and_keeps_the_tail() {
    let mut seen = Vec::new();
    let out = sh("echo a; echo b >&2; printf 'c\\rd'; echo; printf 'no newline'")
        .run_streaming(|stream, line| seen.push((stream, line.to_owned())))
        .unwrap();
    // Lines of one stream keep their order; the two streams may interleave either way.
    let stdout_lines: Vec<&str> = seen
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout_lines, ["a", "c", "d", "no newline"]);
    assert!(seen.contains(&(Stream::Stderr, "b".to_owned())));
    assert_eq!(out.stdout, b"a\nc\rd\nno newline");

    let mut count = 0;
    let err = sh("echo progress; echo fatal: disk full >&2; exit 2")
        .run_streaming(|_, _| count += 1)
        .unwrap_err();
    assert_eq!(count, 2);
    assert_eq!(err.stderr_tail(), Some("fatal: disk full"));
}

#[test]
fn display_quotes_and_elides() {
    let mut cmd = Cmd::new("virt-builder");
    cmd.args(["debian-12", "--root-password", "file:/tmp/a b", "it's"]);
    assert_eq!(
        cmd.to_string(),
        r"virt-builder debian-12 --root-password 'file:/tmp/a b' 'it'\''s'"
    );
    let mut cmd = Cmd::new("virt-customize");
    cmd.arg("--write").arg(format!("/x:{}", "y".repeat(500)));
    let shown = cmd.to_string();
    assert!(
        shown.starts_with("virt-customize --write /x:yyy"),
        "{shown}"
    );
    assert!(shown.ends_with("…[303 more bytes]"), "{shown}");
    assert_eq!(cmd.argv()[2].len(), 503);
    // stdin never shows up, not even in Debug.
    let mut cmd = Cmd::new("chpasswd");
    cmd.stdin_bytes("root:hunter2");
    assert!(!format!("{cmd:?} {cmd}").contains("hunter2"));
}

fn is_alive(pid: &str) -> bool {
    // A zombie is dead for our purposes: it holds no pipe and runs nothing.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}
