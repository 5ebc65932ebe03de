//! `terminal`: runs one allowed program, never through a shell.
//!
//! The command string is split into words like a shell would, but nothing
//! else of a shell happens (no `$VAR`, `;`, `|`, globs). The program gets a
//! cleared environment (the proxy's API keys live in its own), the workspace
//! as working folder and home, and runs in its own process group, which is
//! killed whole when the call ends, times out or is dropped. With a working
//! bubblewrap it also runs jailed: no network, a read-only system, the
//! workspace the only writable path.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::{Done, Fail};

/// Most bytes kept of stdout, and of stderr.
const MAX_OUTPUT: usize = 64 * 1024;
/// System folders the jail shows read-only; missing ones are skipped.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Of /etc only what programs need to start; the rest may hold secrets.
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
];

pub(super) fn schema() -> Value {
    json!({
        "type": "function",
        "function": {
            "name": "terminal",
            "description": "Run one program in the workspace. The command is split into words \
                            like a shell's but never run by a shell: no pipes, redirections, \
                            variables or globs. Only allowed programs run. Answers the exit \
                            code, stdout and stderr.",
            "parameters": {
                "type": "object",
                "properties": {
                    "command": {"type": "string",
                                "description": "The program and its arguments, e.g. `ls -la src`"}
                },
                "required": ["command"]
            }
        }
    })
}

#[derive(Deserialize)]
pub(super) struct Args {
    command: String,
}

pub(super) struct Terminal {
    allow: Vec<String>,
    workspace: PathBuf,
    jailed: bool,
}

impl Terminal {
    /// With `probe`, checks once whether bubblewrap works here.
    pub(super) fn new(allow: Vec<String>, workspace: &Path, probe: bool) -> Terminal {
        let mut terminal = Terminal {
            allow,
            workspace: workspace.to_path_buf(),
            jailed: false,
        };
        if probe {
            let argv = ["true".to_owned()];
            terminal.jailed = std::process::Command::new("bwrap")
                .args(terminal.jail_args(&argv))
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        }
        terminal
    }

    pub(super) fn jailed(&self) -> bool {
        self.jailed
    }

    /// bubblewrap's arguments around `argv`.
    fn jail_args(&self, argv: &[String]) -> Vec<String> {
        let mut args: Vec<String> = ["--unshare-all", "--die-with-parent", "--new-session"]
            .map(String::from)
            .to_vec();
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            // Merged-/usr systems have /bin -> usr/bin: keep the link a link.
            if let Ok(target) = std::fs::read_link(path) {
                args.extend([
                    "--symlink".into(),
                    target.display().to_string(),
                    dir.to_string(),
                ]);
            } else if path.is_dir() {
                args.extend(["--ro-bind".into(), dir.to_string(), dir.to_string()]);
            }
        }
        for file in ETC_FILES {
            args.extend(["--ro-bind-try".into(), file.to_string(), file.to_string()]);
        }
        let ws = self.workspace.display().to_string();
        args.extend(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"].map(String::from));
        // After the tmpfs, so a workspace under /tmp is mounted over it.
        args.extend([
            "--bind".into(),
            ws.clone(),
            ws.clone(),
            "--chdir".into(),
            ws,
            "--".into(),
        ]);
        // bwrap sets PWD after everything else: unset again, the environment
        // stays the three variables promised.
        args.extend(["env", "-u", "PWD", "--"].map(String::from));
        args.extend(argv.iter().cloned());
        args
    }

    pub(super) async fn run(&self, args: Args) -> Done {
        let argv = shell_words::split(&args.command)
            .map_err(|e| Fail::error(format!("cannot split the command: {e}")))?;
        let Some(program) = argv.first() else {
            return Err(Fail::error("the command is empty"));
        };
        if !self.allow.iter().any(|a| a == program) {
            let allowed = if self.allow.is_empty() {
                "none are".to_owned()
            } else {
                format!("allowed: {}", self.allow.join(", "))
            };
            return Err(Fail::refused(format!(
                "`{program}` is not an allowed program ({allowed})"
            )));
        }
        let mut command = if self.jailed {
            let mut c = Command::new("bwrap");
            c.args(self.jail_args(&argv));
            c
        } else {
            let mut c = Command::new(program);
            c.args(&argv[1..]);
            c
        };
        command
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", &self.workspace)
            .env(
                "LANG",
                std::env::var_os("LANG").unwrap_or_else(|| "C.UTF-8".into()),
            )
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Fail::error(format!("program not found: {program}")),
            _ => Fail::error(format!("cannot run {program}: {e}")),
        })?;
        let mut group = Group::new(child)?;
        let stdout = group.child.stdout.take();
        let stderr = group.child.stderr.take();
        let (status, out, err) =
            tokio::join!(group.wait(), read_capped(stdout), read_capped(stderr));
        let status = status.map_err(|e| Fail::error(format!("waiting for {program}: {e}")))?;
        Ok(format!(
            "exit code: {}\nstdout:\n{out}\nstderr:\n{err}",
            code(status)
        ))
    }
}

fn code(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("none (killed by signal {signal})"),
        (None, None) => "unknown".to_owned(),
    }
}

/// The child and its process group, killed whole on drop: a timeout or a
/// client that went away drops the call's future, and with it this.
struct Group {
    child: Child,
    pgid: Pid,
    /// The group was already killed after the child ended.
    done: bool,
}

impl Group {
    fn new(child: Child) -> Result<Group, Fail> {
        let pid = child
            .id()
            .ok_or_else(|| Fail::error("the program ended before it started"))?;
        // process_group(0) made the child the leader of a group of its own id.
        let pgid = Pid::from_raw(pid as i32);
        Ok(Group {
            child,
            pgid,
            done: false,
        })
    }

    /// Waits for the program, then kills what it left running in its group
    /// (which would otherwise hold the output pipes open).
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        let _ = killpg(self.pgid, Signal::SIGKILL);
        self.done = true;
        status
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.done {
            // The leader is not reaped yet (only `wait` reaps it), so the
            // group id cannot have been reused by another process.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

/// All of a pipe, keeping the first [`MAX_OUTPUT`] bytes: the rest is read
/// and dropped, so a chatty program never blocks on a full pipe.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[cut: {dropped} more bytes]"));
    }
    text
}

#[cfg(test)]
mod tests {
    //! The unjailed path, which the integration tests do not reach on a
    //! machine with bubblewrap: there the process group alone stops the
    //! program's children.
    use super::*;
    use std::time::{Duration, Instant};

    fn unjailed(ws: &Path, allow: &[&str]) -> Terminal {
        Terminal::new(allow.iter().map(|s| s.to_string()).collect(), ws, false)
    }

    fn command(command: &str) -> Args {
        Args {
            command: command.to_owned(),
        }
    }

    /// Processes running exactly `sleep <mark>`.
    fn sleeps(mark: &str) -> usize {
        let wanted = format!("sleep\0{mark}\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes())
            })
            .count()
    }

    async fn eventually(check: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        check()
    }

    #[tokio::test]
    async fn runs_with_a_cleared_environment_in_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(dir.path()).unwrap();
        let t = unjailed(&ws, &["env"]);
        assert!(!t.jailed());
        let out = t.run(command("env")).await.unwrap();
        let mut names: Vec<&str> = out
            .lines()
            .skip(2)
            .take_while(|l| *l != "stderr:")
            .filter_map(|l| l.split_once('=').map(|(name, _)| name))
            .collect();
        names.sort();
        assert_eq!(names, ["HOME", "LANG", "PATH"], "{out}");
        assert!(out.contains(&format!("HOME={}\n", ws.display())), "{out}");
    }

    #[tokio::test]
    async fn a_dropped_call_kills_its_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let t = unjailed(dir.path(), &["sh"]);
        let mark = format!("200.{}", fastrand::u32(100_000..999_999));
        let cmd = command(&format!("sh -c 'sleep {mark} & sleep {mark}; wait'"));
        let call = tokio::time::timeout(Duration::from_secs(60), t.run(cmd));
        let watch = async {
            assert!(
                eventually(|| sleeps(&mark) == 2).await,
                "both sleeps started"
            );
        };
        // The watch finishing first drops the call mid-run.
        tokio::select! {
            _ = call => panic!("the call ended by itself"),
            _ = watch => {}
        }
        assert!(
            eventually(|| sleeps(&mark) == 0).await,
            "the grandchild was killed too"
        );
    }

    #[tokio::test]
    async fn what_the_program_leaves_behind_is_killed_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let t = unjailed(dir.path(), &["sh"]);
        let mark = format!("300.{}", fastrand::u32(100_000..999_999));
        // Without the group kill, the background sleep would hold stdout
        // open and the call would wait for it.
        let cmd = command(&format!("sh -c 'sleep {mark} & echo started'"));
        let out = tokio::time::timeout(Duration::from_secs(20), t.run(cmd))
            .await
            .expect("the call returned once sh exited")
            .unwrap();
        assert_eq!(out, "exit code: 0\nstdout:\nstarted\n\nstderr:\n");
        assert!(eventually(|| sleeps(&mark) == 0).await);
    }

    #[test]
    fn the_jail_binds_the_workspace_after_the_tmpfs_and_hides_etc() {
        let t = unjailed(Path::new("/tmp/ws"), &[]);
        let args = t.jail_args(&["ls".to_owned()]);
        let at = |word: &str| args.iter().position(|a| a == word).unwrap();
        assert!(at("--tmpfs") < at("--bind"));
        assert!(args.contains(&"--unshare-all".to_owned()));
        assert!(!args.iter().any(|a| a == "/etc" || a == "/"), "{args:?}");
        assert_eq!(args.last().unwrap(), "ls");
    }
}
