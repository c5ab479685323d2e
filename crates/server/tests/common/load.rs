//! Load-test support: the file-descriptor limit, and a server process's resident
//! memory, open file descriptors and live tokio tasks (from /proc and its metrics).
#![allow(dead_code)]

/// Raises this process's soft limit on open files to at least `need` (up to the hard
/// limit, which children inherit too); panics, saying what to do, when the hard
/// limit is lower.
pub fn raise_fd_limit(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= need,
        "this test needs {need} open files; the hard limit is {hard} (raise it: ulimit -Hn, /etc/security/limits.conf)"
    );
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is alive");
    let line = status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Open file descriptors.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process is alive")
        .count()
}

/// One gauge (summed over its label sets) from `/api/metrics` of the server at
/// `base`, on a connection of its own that is closed after (so it is not counted
/// again at the next reading).
pub async fn gauge(base: &str, key: &str, name: &str) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = client
        .get(format!("{base}/api/metrics"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        if l.split([' ', '{']).next() == Some(name) {
            *found.get_or_insert(0.0) += l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        }
    }
    found.unwrap_or_else(|| panic!("no {name} in /api/metrics"))
}
