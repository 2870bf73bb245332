//! Private Redis servers for the Redis-store tests.
//!
//! - [`RedisServer`]: one `redis-server` on a free loopback port (never a standard
//!   one), without persistence, killed by PID on drop; it can be SIGKILLed and
//!   restarted on the same port.
//! - [`RedisCluster`]: three masters joined with `redis-cli --cluster create`.
//! - [`SilentServer`]: a TCP listener that accepts connections and never reads or
//!   answers (a hung Redis).
//! - `INFO commandstats`, `CONFIG RESETSTAT`, `SCAN`/`PTTL` through `redis-cli`.
//!
//! `redis-server` and `redis-cli` are required: when they are missing the tests
//! panic with a clear message (they never skip); `scripts/test` installs them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{within, TempDir};

/// Ports a test must never use: the standard Redis ports and their bus ports.
const STANDARD_PORTS: [u16; 6] = [6379, 6380, 16379, 16380, 26379, 7000];

/// Panics with a clear message unless `redis-server` and `redis-cli` both run.
pub(crate) fn require_redis_tools() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let res = CHECKED.get_or_init(|| {
        for tool in ["redis-server", "redis-cli"] {
            match Command::new(tool)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                Ok(s) if s.success() => {}
                Ok(s) => return Err(format!("`{tool} --version` failed ({s})")),
                Err(e) => return Err(format!("`{tool}` could not be run ({e})")),
            }
        }
        Ok(())
    });
    if let Err(e) = res {
        panic!(
            "the Redis-store tests need redis-server and redis-cli on PATH: {e}. \
             Install them (Debian/Ubuntu: apt-get install redis-server, which brings \
             redis-cli; scripts/test does this) — these tests never skip."
        );
    }
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free loopback port (bound once on port 0, then released).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if !STANDARD_PORTS.contains(&port) {
            return port;
        }
    }
}

/// A free port `P` for a cluster node whose bus port `P + 10000` is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..500 {
        let p = free_port();
        if p <= 55535 && !STANDARD_PORTS.contains(&(p + 10000)) && bindable(p + 10000) {
            return p;
        }
    }
    panic!("found no free loopback port P with P + 10000 free too (for a Redis Cluster node)");
}

/// Sends an inline `PING` and expects `+PONG`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(got.starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// One `redis-server` on loopback, killed (SIGKILL, by PID) on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Option<Child>,
    cluster: bool,
    dir: TempDir,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub(crate) async fn start() -> RedisServer {
        RedisServer::start_inner(false).await
    }

    /// A server with `--cluster-enabled yes` (not yet part of a cluster).
    pub(crate) async fn start_cluster_node() -> RedisServer {
        RedisServer::start_inner(true).await
    }

    async fn start_inner(cluster: bool) -> RedisServer {
        require_redis_tools();
        let mut failures = Vec::new();
        for _ in 0..8 {
            let port = if cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            let mut server = RedisServer {
                port,
                child: None,
                cluster,
                dir: TempDir::new(if cluster { "redis-node" } else { "redis" }),
            };
            match server.spawn_and_wait(Duration::from_secs(10)).await {
                Ok(()) => return server,
                Err(e) => {
                    failures.push(format!("port {port}: {e}"));
                    server.kill();
                }
            }
        }
        panic!(
            "could not start redis-server on a free loopback port:\n{}",
            failures.join("\n")
        );
    }

    fn args(&self) -> Vec<String> {
        let dir = self.dir.path().display().to_string();
        let mut a: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--protected-mode".into(),
            "no".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--dir".into(),
            dir.clone(),
            "--logfile".into(),
            format!("{dir}/redis-{}.log", self.port),
        ];
        if self.cluster {
            a.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("{dir}/nodes-{}.conf", self.port),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ]);
        }
        a
    }

    fn log_tail(&self) -> String {
        let p = self.dir.path().join(format!("redis-{}.log", self.port));
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    async fn spawn_and_wait(&mut self, limit: Duration) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server exited ({st}); log:\n{}",
                        self.log_tail()
                    ));
                }
            }
            if ping(self.port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING within {limit:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (by PID) and reaps it. No-op when it is not running.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // std's Child::kill sends SIGKILL to this child's PID.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (retrying while the port is
    /// still held), and waits until it answers PING.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut failures = Vec::new();
        loop {
            match self.spawn_and_wait(Duration::from_secs(5)).await {
                Ok(()) => return,
                Err(e) => {
                    self.kill();
                    failures.push(e);
                    if Instant::now() > deadline {
                        panic!(
                            "could not restart redis-server on port {}:\n{}",
                            self.port,
                            failures.join("\n")
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs `redis-cli -p PORT args...` and returns its stdout.
    pub(crate) async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args).await
    }

    /// `CONFIG RESETSTAT`.
    pub(crate) async fn reset_stats(&self) {
        let out = self.cli(&["config", "resetstat"]).await;
        assert_eq!(out.trim(), "OK", "CONFIG RESETSTAT answered {out:?}");
    }

    /// `INFO commandstats`, parsed.
    pub(crate) async fn commandstats(&self) -> HashMap<String, CmdStat> {
        parse_commandstats(&self.cli(&["info", "commandstats"]).await)
    }

    /// Calls of `EVALSHA` plus calls of `EVAL` since the last reset.
    pub(crate) async fn script_calls(&self) -> u64 {
        script_calls_of(&self.commandstats().await)
    }

    /// Every key (`redis-cli --scan`).
    pub(crate) async fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .await
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// `PTTL key` (-1: no expiry, -2: no such key).
    pub(crate) async fn pttl(&self, key: &str) -> i64 {
        let out = self.cli(&["pttl", key]).await;
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("PTTL {key} answered {out:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT args...` (bounded to 20 s) and returns
/// its stdout; panics when it fails.
pub(crate) async fn redis_cli(port: u16, args: &[&str]) -> String {
    require_redis_tools();
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let what = format!("redis-cli -p {port} {}", args.join(" "));
    let out = within(&what, Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `cmdstat_<name>` line of `INFO commandstats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CmdStat {
    pub(crate) calls: u64,
    pub(crate) failed_calls: u64,
    pub(crate) rejected_calls: u64,
}

/// Parses `INFO commandstats` into command name (lowercase, without
/// `cmdstat_`) → counters.
pub(crate) fn parse_commandstats(text: &str) -> HashMap<String, CmdStat> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let mut st = CmdStat::default();
        for kv in fields.split(',') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k.trim() {
                "calls" => st.calls = v,
                "failed_calls" => st.failed_calls = v,
                "rejected_calls" => st.rejected_calls = v,
                _ => {}
            }
        }
        out.insert(name.to_ascii_lowercase(), st);
    }
    out
}

/// `evalsha` calls + `eval` calls.
pub(crate) fn script_calls_of(stats: &HashMap<String, CmdStat>) -> u64 {
    ["evalsha", "eval"]
        .iter()
        .map(|n| stats.get(*n).map_or(0, |s| s.calls))
        .sum()
}

/// A 3-master Redis Cluster on loopback (no replicas).
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_cluster_node().await);
        }
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = within(
            "redis-cli --cluster create",
            Duration::from_secs(60),
            cmd.output(),
        )
        .await
        .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &cluster.nodes {
            loop {
                let info = n.cli(&["cluster", "info"]).await;
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} never reported cluster_state:ok:\n{info}",
                    n.port
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,redis://127.0.0.1:P3`
    pub(crate) fn seed_list(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `evalsha` + `eval` calls summed over the nodes.
    pub(crate) async fn script_calls(&self) -> u64 {
        let mut total = 0;
        for n in &self.nodes {
            total += n.script_calls().await;
        }
        total
    }
}

/// A TCP listener on loopback that accepts connections and never reads from
/// them nor answers: a Redis that hangs. Stops on drop.
pub(crate) struct SilentServer {
    pub(crate) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SilentServer {
    pub(crate) async fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind silent listener");
        let addr = listener.local_addr().expect("silent listener addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        SilentServer {
            addr,
            accepted,
            task,
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
