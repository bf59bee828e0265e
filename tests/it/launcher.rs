//! The launcher leaves no process behind, however its owner goes away. Each case starts a
//! second, private environment (no CRDs, to keep it quick) and ends it a different way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

struct Launched {
    child: Child,
    run_dir: PathBuf,
    pids: Vec<(String, u32)>,
}

fn launch() -> Launched {
    let mut child = Command::new("python3")
        .arg(support::repo_root().join("testenv/launch.py"))
        .args(["--until-stdin-closes", "--crds", ""])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the launcher");
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().next().expect("a READY line").expect("readable output");
    let env_file = PathBuf::from(line.strip_prefix("READY ").unwrap_or_else(|| panic!("not ready: {line}")));
    let run_dir = env_file.parent().unwrap().to_path_buf();
    let pids = std::fs::read_to_string(run_dir.join("pids"))
        .expect("the launcher writes its children's pids")
        .lines()
        .map(|l| {
            let (name, pid) = l.split_once(' ').unwrap();
            (name.to_owned(), pid.parse().unwrap())
        })
        .collect::<Vec<_>>();
    let names: Vec<_> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["etcd", "kube-apiserver", "moto", "platform", "fault-proxy", "versitygw"]);
    for (name, pid) in &pids {
        assert!(alive(*pid), "{name} ({pid}) is not running while the environment is up");
    }
    Launched { child, run_dir, pids }
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent has yet to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn assert_gone(pids: &[(String, u32)], run_dir: Option<&Path>, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if pids.iter().all(|(_, pid)| !alive(*pid)) && run_dir.is_none_or(|d| !d.exists()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = pids.iter().filter(|(_, pid)| alive(*pid)).collect();
    panic!("after {how}: still running {left:?}; run dir left: {:?}", run_dir.filter(|d| d.exists()));
}

#[test]
fn closing_stdin_tears_everything_down() {
    let _timer = crate::timed!();
    let mut env = launch();
    drop(env.child.stdin.take());
    let status = env.child.wait().unwrap();
    assert!(status.success(), "launcher exited with {status}");
    assert_gone(&env.pids, Some(&env.run_dir), "stdin closed");
}

#[test]
fn sigterm_tears_everything_down() {
    let _timer = crate::timed!();
    let mut env = launch();
    let ok = Command::new("kill").args(["-TERM", &env.child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    env.child.wait().unwrap();
    assert_gone(&env.pids, Some(&env.run_dir), "SIGTERM");
}

#[test]
fn a_killed_launcher_takes_its_children_with_it() {
    let _timer = crate::timed!();
    let mut env = launch();
    env.child.kill().unwrap(); // SIGKILL: no teardown code runs, the kernel's death signal does
    env.child.wait().unwrap();
    assert_gone(&env.pids, None, "SIGKILL of the launcher");
    let _ = std::fs::remove_dir_all(&env.run_dir);
}
