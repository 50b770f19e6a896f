//! A throwaway PostgreSQL for the ledger's tests: a cluster made by `initdb` in its own temporary
//! directory, a `postgres` on a free loopback port with its socket in that directory, one
//! database, stopped on drop. PostgreSQL refuses to run as root, so as root the cluster belongs to
//! an unprivileged user (`postgres` when the package made it, else `nobody`) and both programs
//! run as that user through `setpriv`. A missing or failing PostgreSQL fails the test, saying
//! why: these tests never skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::support::pause;

/// The database every test's server writes to.
pub const DATABASE: &str = "pricebeast";
/// The cluster's superuser (trust authentication on loopback: no password).
const USER: &str = "pb";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who runs the cluster: nobody but ourselves unless we are root.
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

pub struct Postgres {
    bin: PathBuf,
    owner: Option<Owner>,
    port: u16,
    /// Holds `data/` (the cluster), the socket and `postgres.log`.
    dir: tempfile::TempDir,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
}

impl Postgres {
    /// A new cluster, started, with [`DATABASE`] made.
    pub fn start() -> Self {
        let bin = find_bin();
        let owner = owner();
        // Under /tmp rather than $TMPDIR: the cluster's owner must be able to reach it.
        let dir = tempfile::Builder::new().prefix("pb-pg-").tempdir_in("/tmp").expect("making PostgreSQL's directory");
        if let Some(owner) = &owner {
            std::os::unix::fs::chown(dir.path(), Some(owner.uid), Some(owner.gid))
                .unwrap_or_else(|e| panic!("giving {} to {}: {e}", dir.path().display(), owner.name));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let mut pg = Self { bin, owner, port: 0, dir, child: None, runtime };
        let data = pg.data_dir();
        let initdb = pg
            .command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", pg.bin.join("initdb").display()));
        assert!(
            initdb.status.success(),
            "initdb failed ({}), so the PostgreSQL ledger tests cannot run:\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        // A port nothing listens on now; another process taking it before postgres binds is
        // retried with a new one.
        for attempt in 0.. {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => break,
                Err(why) if attempt < 3 && why.contains("in use") => continue,
                Err(why) => panic!("PostgreSQL did not start: {why}"),
            }
        }
        pg.execute("postgres", &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// The URL for `usage.store`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The URL as a TOML string, for `Setup::set("usage", "store", ..)`.
    pub fn store(&self) -> String {
        format!("\"{}\"", self.url())
    }

    /// Stops the server (fast shutdown: clients are cut off, what is committed stays).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
        signal(pid, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().expect("waiting for postgres").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("postgres did not stop within {STOP_TIMEOUT:?} of SIGINT; log:\n{}", self.log());
            }
            pause(Duration::from_millis(20));
        }
    }

    /// Starts the same cluster again on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        if let Err(why) = self.launch() {
            panic!("PostgreSQL did not start again on port {}: {why}", self.port);
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Runs `sql` (no rows wanted) in `database`.
    pub fn execute(&self, database: &str, sql: &str) {
        let outcome = self.runtime.block_on(async {
            let client = self.client(database).await?;
            client.batch_execute(sql).await
        });
        outcome.unwrap_or_else(|e| panic!("{sql}: {e}; PostgreSQL's log:\n{}", self.log()));
    }

    /// The one integer `sql` selects from [`DATABASE`] (NULL as 0).
    pub fn scalar(&self, sql: &str) -> i64 {
        let outcome = self.runtime.block_on(async {
            let client = self.client(DATABASE).await?;
            let row = client.query_one(sql, &[]).await?;
            Ok::<_, tokio_postgres::Error>(row.get::<_, Option<i64>>(0).unwrap_or(0))
        });
        outcome.unwrap_or_else(|e| panic!("{sql}: {e}; PostgreSQL's log:\n{}", self.log()))
    }

    /// Runs `work` on this harness's runtime (for tests that call the library's async API).
    pub fn block_on<F: std::future::Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }

    async fn client(&self, database: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let url = format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` from PostgreSQL's bin directory, as the cluster's owner, in its directory.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.owner {
            None => Command::new(path),
            Some(owner) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={}", owner.uid))
                    .arg(format!("--regid={}", owner.gid))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(path);
                command
            }
        };
        command.current_dir(self.dir.path()).env("LC_ALL", "C").env_remove("PGDATA");
        command
    }

    /// Starts `postgres` on `self.port` and waits until it accepts connections.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let log_len = log.metadata().map_or(0, |m| m.len());
        let port = self.port.to_string();
        let data = self.data_dir();
        let socket_dir = self.dir.path().display().to_string();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port, "-h", "127.0.0.1", "-k", &socket_dir])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=50", "-c", "shared_buffers=16MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.bin.join("postgres").display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                let log = self.log();
                let tail = log.get(usize::try_from(log_len).unwrap_or(0)..).unwrap_or(&log).to_owned();
                return Err(format!("postgres exited ({status}); its log:\n{tail}"));
            }
            if self.runtime.block_on(self.client("postgres")).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("no connection within {START_TIMEOUT:?}; its log:\n{}", self.log()));
            }
            pause(Duration::from_millis(50));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            signal(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            pause(Duration::from_millis(20));
        }
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}--- end of postgres log ---", self.log());
        }
    }
}

/// PostgreSQL's bin directory: where `initdb` on PATH lives, else the newest
/// /usr/lib/postgresql/VERSION/bin (Debian keeps the server programs off PATH).
fn find_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_owned));
    let debian = || {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    };
    let bin = on_path.filter(|b| b.join("postgres").is_file()).or_else(debian);
    bin.unwrap_or_else(|| {
        panic!(
            "PostgreSQL's initdb and postgres were not found (on PATH or under /usr/lib/postgresql/*/bin): \
             the PostgreSQL ledger tests need them; install Debian's postgresql package (scripts/test.sh does)"
        )
    })
}

/// The unprivileged user to run the cluster as, when we are root.
fn owner() -> Option<Owner> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to our effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).expect("reading /proc/self");
    if euid != 0 {
        return None;
    }
    let id = |name: &str, flag: &str| -> Option<u32> {
        let output: Output = Command::new("id").args([flag, name]).stderr(Stdio::null()).output().ok()?;
        String::from_utf8(output.stdout).ok()?.trim().parse().ok().filter(|_| output.status.success())
    };
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| {
            Some(Owner { name: (*name).to_owned(), uid: id(name, "-u")?, gid: id(name, "-g")? }).filter(|o| o.uid != 0)
        })
        .or_else(|| panic!("running as root, and neither a postgres nor a nobody user to run PostgreSQL as"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("its address").port()
}

#[allow(unsafe_code)]
fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) touches no memory of ours; `pid` is our own child, not reaped yet, so the id
    // cannot belong to another process.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}
