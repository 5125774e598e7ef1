//! Running the df2redis binary as a separate process, as users do.

use std::process::{Child, Command, Output, Stdio};

/// Start `df2redis ARGS` with its output captured. With `DF2REDIS_TEST_RESTORE=off` in the
/// environment, `replicate` and `migrate` runs get `--restore off`: the same tests then prove
/// the element path (`scripts/test.sh` runs the end-to-end tests a second time so).
pub fn df2redis(args: &[&str]) -> Child {
    let restore_off = std::env::var("DF2REDIS_TEST_RESTORE").is_ok_and(|v| v == "off")
        && args.first().is_some_and(|a| *a == "replicate" || *a == "migrate")
        && !args.contains(&"--restore");
    Command::new(env!("CARGO_BIN_EXE_df2redis"))
        .args(args)
        .args(if restore_off { &["--restore", "off"][..] } else { &[] })
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM by PID (the clean shutdown path), then the exit status and output.
pub fn terminate(child: Child) -> Output {
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    child.wait_with_output().unwrap()
}

/// Standard output then standard error, as text.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Wait for `child` to exit, at most `limit`; its exit status and output. Past the limit it is
/// killed by PID and the test fails, naming `what` was awaited.
pub fn wait_bounded(mut child: Child, limit: std::time::Duration, what: &str) -> Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("df2redis did not exit within {limit:?} ({what}):\n{}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
