//! Real services for end-to-end tests: PostgreSQL, OpenSSH's sshd and coturn, each started as a
//! child process on 127.0.0.1 in its own temporary directory and stopped on drop.
//!
//! Every `start()` blocks until the service is ready (bounded by [`START_TIMEOUT`]) and fails with
//! the tail of the service's log otherwise. Dropping a service stops it (gracefully, then with
//! SIGKILL) together with every process it spawned, then deletes its directory.
//!
//! Services stay in the test's process group, so Ctrl-C on a test run reaches them too.
//! The functions here are blocking; from async code call them in `spawn_blocking` (or before the
//! runtime starts). The returned [`Command`]s convert into `tokio::process::Command` with `From`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long `start()` waits for a service to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service gets to exit after its stop signal before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a service's log included in errors.
const LOG_TAIL_LINES: usize = 40;
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

// ------------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server (Debian's /usr/lib/postgresql/<version>/bin) listening on 127.0.0.1 only,
/// with trust authentication, superuser `postgres` and its unix socket in its temp dir.
pub struct Postgres {
    // Field order matters: the daemon is stopped before its directory is removed.
    daemon: Daemon,
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    pub fn start() -> Result<Postgres> {
        let bin = postgres_bin_dir()?;
        // postgres refuses to run as root: run initdb and postgres as the `postgres` system user.
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let root = postgres_temp_root();
        let dir = tempfile::Builder::new()
            .prefix("burrow-pg-")
            .tempdir_in(&root)
            .context("creating PostgreSQL's temp dir")?;
        chown_to(dir.path(), run_as.as_ref())?;
        let as_user = |cmd: &mut Command| run_as_user(cmd, run_as.as_ref(), dir.path());

        // initdb takes seconds; copying a cached cluster a fraction of that.
        let template = postgres_template(&bin, &root, run_as.as_ref())?;
        let data = dir.path().join("data");
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&template).arg(&data);
        as_user(&mut cp);
        run_checked(&mut cp, "copying the template cluster")?;

        let port = free_tcp_port()?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=32MB"])
            .args(["-c", "max_connections=100", "-c", "log_connections=on"])
            .args(["-c", "log_disconnections=on"]);
        as_user(&mut cmd);
        // SIGINT = "fast shutdown": the postmaster terminates its backends, then exits.
        let mut daemon = Daemon::spawn(
            "postgres",
            cmd,
            dir.path(),
            &dir.path().join("postgres.log"),
            Signal::SIGINT,
        )?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            daemon.check_running()?;
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-t", "2", "-p"])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                break;
            }
            daemon.check_deadline(deadline)?;
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Postgres {
            daemon,
            dir,
            bin,
            port,
        })
    }

    /// The TCP port on 127.0.0.1 the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Live processes this service started (itself included); all are killed on drop.
    pub fn owned_pids(&self) -> Vec<u32> {
        self.daemon.owned_pids()
    }

    /// The temp dir holding the data directory, the unix socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// `psql -X -h 127.0.0.1 -p PORT -U postgres -d postgres -v ON_ERROR_STOP=1` for connecting
    /// through any port (e.g. a tunnel's local end); add e.g. `-tAc "select 1"`.
    pub fn psql_cmd(&self, port: u16) -> Command {
        let mut cmd = self.pg_client_cmd("psql");
        cmd.args(["-X", "-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// `pgbench -h 127.0.0.1 -p PORT -U postgres` against database `postgres` (via PGDATABASE, so
    /// no trailing dbname is needed); add e.g. `-i -s 1` or `-c 4 -T 5`.
    pub fn pgbench_cmd(&self, port: u16) -> Command {
        let mut cmd = self.pg_client_cmd("pgbench");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-U", "postgres"]);
        cmd
    }

    fn pg_client_cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        for var in [
            "PGPASSWORD",
            "PGSERVICE",
            "PGSSLMODE",
            "PGHOST",
            "PGHOSTADDR",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGDATABASE", "postgres")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `postgres`, `initdb` and `psql`.
fn postgres_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(u32, PathBuf)> = None;
    let entries = fs::read_dir(root).with_context(|| {
        format!(
            "{} not found: install postgresql (scripts/install-deps.sh)",
            root.display()
        )
    })?;
    for entry in entries {
        let entry = entry?;
        let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        let complete = ["postgres", "initdb", "psql", "pg_isready"]
            .iter()
            .all(|b| bin.join(b).is_file());
        if complete && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!("no /usr/lib/postgresql/*/bin with postgres, initdb, psql and pg_isready: install postgresql")
    })
}

/// Bump when the initdb arguments change (the template's name carries it).
const PG_TEMPLATE_VERSION: u32 = 1;

/// A pristine cluster made by initdb, cached across tests and test runs in
/// `<temp root>/burrow-e2e-pg<version>-template-v<N>-<uid>` (about 30 MB; delete it freely).
/// Created atomically (initdb in a scratch dir, then rename), so concurrent tests and processes
/// agree on it; within a process, one test runs initdb while the others wait.
fn postgres_template(bin: &Path, root: &Path, run_as: Option<&User>) -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());

    let version = bin
        .parent()
        .and_then(|v| v.file_name())
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uid = run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid.as_raw());
    let template = root.join(format!(
        "burrow-e2e-pg{version}-template-v{PG_TEMPLATE_VERSION}-{uid}"
    ));
    let marker = "burrow-template-complete";
    if template.join(marker).is_file() {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&template)?;
        // In a world-writable dir, trust only a template owned by the user that will run it.
        ensure!(
            meta.uid() == uid && meta.mode() & 0o022 == 0,
            "{} is not owned by uid {uid} or is group/world-writable; delete it",
            template.display()
        );
        return Ok(template);
    }

    let scratch = tempfile::Builder::new()
        .prefix("burrow-pg-template-")
        .tempdir_in(root)
        .context("creating a scratch dir for initdb")?;
    chown_to(scratch.path(), run_as)?;
    let data = scratch.path().join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions", "--wal-segsize=1"]);
    run_as_user(&mut initdb, run_as, scratch.path());
    run_checked(&mut initdb, "initdb")?;
    let marker_path = data.join(marker);
    fs::write(&marker_path, "").with_context(|| format!("writing {}", marker_path.display()))?;
    chown_to(&marker_path, run_as)?;
    match fs::rename(&data, &template) {
        Ok(()) => Ok(template),
        // Another process got there first.
        Err(_) if template.join(marker).is_file() => Ok(template),
        Err(e) => Err(anyhow!(e).context(format!(
            "renaming {} to {}",
            data.display(),
            template.display()
        ))),
    }
}

fn chown_to(path: &Path, user: Option<&User>) -> Result<()> {
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .with_context(|| format!("chown of {} to {}", path.display(), user.name))?;
    }
    Ok(())
}

/// Runs `cmd` as `user` (if any) in `cwd` (initdb and postgres need a cwd they can access).
fn run_as_user(cmd: &mut Command, user: Option<&User>, cwd: &Path) {
    if let Some(user) = user {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        cmd.env("HOME", cwd).env("USER", &user.name);
    }
    cmd.current_dir(cwd);
}

/// The `postgres` system user, created if missing (the Debian package normally creates it).
fn postgres_user() -> Result<User> {
    if let Some(user) = User::from_name("postgres").context("looking up user postgres")? {
        return Ok(user);
    }
    let mut useradd = Command::new("useradd");
    useradd.args(["--system", "--user-group", "--no-create-home"]);
    useradd.args([
        "--home-dir",
        "/var/lib/postgresql",
        "--shell",
        "/bin/false",
        "postgres",
    ]);
    run_checked(&mut useradd, "useradd postgres")?;
    User::from_name("postgres")
        .context("looking up user postgres")?
        .ok_or_else(|| anyhow!("user postgres still missing after useradd"))
}

/// Where clusters go: /dev/shm when it is a tmpfs with at least 2 GiB free (copying a 30 MB
/// cluster to a disk can take seconds), else [`world_traversable_temp_root`].
fn postgres_temp_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let roomy = nix::sys::statvfs::statvfs(shm)
        .is_ok_and(|st| st.blocks_available().saturating_mul(st.fragment_size()) >= 2 << 30);
    let open =
        fs::metadata(shm).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o1777 == 0o1777);
    if roomy && open {
        shm.to_owned()
    } else {
        world_traversable_temp_root()
    }
}

/// The system temp dir if every ancestor is searchable by others (the postgres user must reach
/// its data directory), otherwise /tmp.
fn world_traversable_temp_root() -> PathBuf {
    let tmp = std::env::temp_dir();
    let ok = tmp
        .ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if ok { tmp } else { PathBuf::from("/tmp") }
}

// ------------------------------------------------------------------------------------------------
// sshd

/// OpenSSH's sshd listening on 127.0.0.1, accepting only its generated client key for root.
pub struct Sshd {
    daemon: Daemon,
    dir: TempDir,
    port: u16,
    client_key: PathBuf,
}

impl Sshd {
    pub fn start() -> Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        ensure!(
            sshd.is_file(),
            "/usr/sbin/sshd not found: install openssh-server"
        );
        check_root_not_locked()?;
        // Privilege separation directory; systemd-tmpfiles creates it on real systems.
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            fs::create_dir_all(privsep).context("creating /run/sshd")?;
            fs::set_permissions(privsep, fs::Permissions::from_mode(0o755))
                .context("chmod /run/sshd")?;
        }

        let dir = tempfile::Builder::new()
            .prefix("burrow-sshd-")
            .tempdir()
            .context("creating sshd's temp dir")?;
        let d = dir.path();
        let host_key = d.join("ssh_host_ed25519_key");
        let client_key = d.join("client_ed25519");
        ssh_keygen(&host_key)?;
        ssh_keygen(&client_key)?;
        let authorized_keys = d.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .context("writing authorized_keys")?;

        let port = free_tcp_port()?;
        let config = d.join("sshd_config");
        let config_text = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PidFile {pid_file}\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             StrictModes no\n\
             LogLevel VERBOSE\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             AllowTcpForwarding yes\n\
             MaxStartups 100:30:200\n\
             MaxSessions 100\n\
             Subsystem sftp internal-sftp\n\
             SetEnv {OWNER_ENV}={owner}\n",
            host_key = host_key.display(),
            authorized_keys = authorized_keys.display(),
            pid_file = d.join("sshd.pid").display(),
            owner = d.display(),
        );
        fs::write(&config, config_text).context("writing sshd_config")?;

        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"]).arg(&config).current_dir(d);
        let mut daemon = Daemon::spawn("sshd", cmd, d, &d.join("sshd.log"), Signal::SIGTERM)?;
        // Connection handlers outlive a SIGTERMed listener; end them first, while it reaps them.
        daemon.descendants_first = true;

        // Ready once it sends its identification string.
        let addr = SocketAddr::from((LOCALHOST, port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            daemon.check_running()?;
            if ssh_banner(addr).is_ok_and(|b| b.starts_with("SSH-2.0-")) {
                break;
            }
            daemon.check_deadline(deadline)?;
            thread::sleep(Duration::from_millis(25));
        }
        Ok(Sshd {
            daemon,
            dir,
            port,
            client_key,
        })
    }

    /// The TCP port on 127.0.0.1 sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The listening sshd's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Live processes this service started (itself included); all are killed on drop.
    pub fn owned_pids(&self) -> Vec<u32> {
        self.daemon.owned_pids()
    }

    /// The temp dir holding keys, sshd_config and `sshd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key authorized for root.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The last lines of sshd's log.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// `ssh EXTRA_ARGS -F /dev/null -i KEY -o ...(no host key checks, BatchMode, LogLevel=ERROR)
    /// -p PORT root@127.0.0.1` against sshd's own port; append the remote command with `.arg()`.
    /// `extra_args` come first because ssh's first value of an option wins: they override the
    /// defaults, including the port (`&["-p", "5432"]`), e.g. `&["-o", "ProxyCommand=burrow ..."]`.
    pub fn ssh_cmd(&self, extra_args: &[&str]) -> Command {
        self.ssh_cmd_port(self.port, extra_args)
    }

    /// Like [`Sshd::ssh_cmd`] but connecting to `port` (e.g. a tunnel's local end).
    pub fn ssh_cmd_port(&self, port: u16, extra_args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(extra_args);
        self.ssh_common_args(&mut cmd);
        cmd.arg("-p").arg(port.to_string()).arg("root@127.0.0.1");
        cmd
    }

    /// `scp EXTRA_ARGS -F /dev/null -i KEY -o ... -P PORT` against sshd's own port (`extra_args`
    /// win, as for [`Sshd::ssh_cmd`]); append source and target, e.g.
    /// `.arg(local).arg(Sshd::scp_target("/tmp/x"))`.
    pub fn scp_cmd(&self, extra_args: &[&str]) -> Command {
        self.scp_cmd_port(self.port, extra_args)
    }

    /// Like [`Sshd::scp_cmd`] but connecting to `port`.
    pub fn scp_cmd_port(&self, port: u16, extra_args: &[&str]) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(extra_args);
        self.ssh_common_args(&mut cmd);
        // Unlike ssh, scp keeps the last -P: add ours only if the caller gave none.
        if !extra_args.iter().any(|a| a.starts_with("-P")) {
            cmd.arg("-P").arg(port.to_string());
        }
        cmd
    }

    /// `root@127.0.0.1:PATH`, the remote side of an scp.
    pub fn scp_target(path: impl AsRef<Path>) -> String {
        format!("root@127.0.0.1:{}", path.as_ref().display())
    }

    fn ssh_common_args(&self, cmd: &mut Command) {
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
            ])
            .stdin(Stdio::null());
    }
}

fn ssh_keygen(path: &Path) -> Result<()> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "burrow-e2e", "-f"])
        .arg(path);
    run_checked(&mut cmd, "ssh-keygen")
}

fn ssh_banner(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// With `UsePAM no`, sshd refuses even key logins to accounts whose password hash starts with '!'.
fn check_root_not_locked() -> Result<()> {
    let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
        return Ok(());
    };
    let locked = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .is_some_and(|rest| rest.starts_with('!'));
    ensure!(
        !locked,
        "root's password is locked ('!' in /etc/shadow), so sshd (UsePAM no) refuses key logins \
         for root; unlock without a password: usermod -p '*' root"
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// coturn

/// coturn's `turnserver` on 127.0.0.1 (UDP and TCP on one port; UDP relays only, on 127.0.0.1),
/// using TURN REST credentials (`use-auth-secret`) with realm `burrow`.
pub struct Coturn {
    daemon: Daemon,
    dir: TempDir,
    port: u16,
    relay_ports: (u16, u16),
    secret: String,
}

impl Coturn {
    pub fn start(secret: &str) -> Result<Coturn> {
        // It goes into turnserver.conf verbatim.
        ensure!(
            !secret.is_empty() && !secret.contains(|c: char| c.is_whitespace() || c == '#'),
            "coturn secret must be non-empty, without whitespace or '#'"
        );
        let turnserver = find_in_path("turnserver")
            .ok_or_else(|| anyhow!("turnserver not found on PATH: install coturn"))?;
        let dir = tempfile::Builder::new()
            .prefix("burrow-coturn-")
            .tempdir()
            .context("creating coturn's temp dir")?;
        let d = dir.path();
        let port = free_udp_tcp_port()?;
        let (min_port, max_port) = free_udp_port_range(RELAY_RANGE_LEN)?;
        let config = d.join("turnserver.conf");
        let config_text = format!(
            "listening-ip=127.0.0.1\n\
             relay-ip=127.0.0.1\n\
             listening-port={port}\n\
             min-port={min_port}\n\
             max-port={max_port}\n\
             use-auth-secret\n\
             static-auth-secret={secret}\n\
             realm=burrow\n\
             fingerprint\n\
             no-tls\n\
             no-dtls\n\
             no-tcp-relay\n\
             allow-loopback-peers\n\
             no-multicast-peers\n\
             no-cli\n\
             no-rfc5780\n\
             log-file=stdout\n\
             simple-log\n\
             pidfile={pid_file}\n\
             userdb={userdb}\n",
            pid_file = d.join("turnserver.pid").display(),
            userdb = d.join("turndb").display(),
        );
        fs::write(&config, config_text).context("writing turnserver.conf")?;

        let mut cmd = Command::new(turnserver);
        cmd.arg("-c").arg(&config).current_dir(d);
        let mut daemon = Daemon::spawn(
            "turnserver",
            cmd,
            d,
            &d.join("turnserver.log"),
            Signal::SIGTERM,
        )?;

        let server = SocketAddr::from((LOCALHOST, port));
        let socket = UdpSocket::bind((LOCALHOST, 0)).context("binding a UDP socket")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            daemon.check_running()?;
            if stun_binding(&socket, server, Duration::from_millis(200)).is_ok() {
                break;
            }
            daemon.check_deadline(deadline)?;
        }
        Ok(Coturn {
            daemon,
            dir,
            port,
            relay_ports: (min_port, max_port),
            secret: secret.to_owned(),
        })
    }

    /// The UDP/TCP port on 127.0.0.1 turnserver listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.port))
    }

    /// `turn:127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}", self.port)
    }

    /// `stun:127.0.0.1:PORT`.
    pub fn stun_url(&self) -> String {
        format!("stun:127.0.0.1:{}", self.port)
    }

    /// The shared secret for TURN REST credentials.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The inclusive UDP port range relays are allocated from.
    pub fn relay_ports(&self) -> (u16, u16) {
        self.relay_ports
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Live processes this service started (itself included); all are killed on drop.
    pub fn owned_pids(&self) -> Vec<u32> {
        self.daemon.owned_pids()
    }

    /// The temp dir holding turnserver.conf and `turnserver.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of turnserver's log.
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }
}

const RELAY_RANGE_LEN: u16 = 64;
const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;

/// Sends a STUN Binding Request from `socket` to `server`, retransmitting every 100 ms until a
/// matching success response arrives or `timeout` passes; returns the XOR-MAPPED-ADDRESS.
pub fn stun_binding(
    socket: &UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr> {
    let mut txid = [0u8; 12];
    let seed = splitmix64(&mut next_seed());
    txid[..8].copy_from_slice(&seed.to_le_bytes());
    txid[8..].copy_from_slice(&std::process::id().to_le_bytes());
    let mut request = [0u8; 20];
    request[0..2].copy_from_slice(&0x0001u16.to_be_bytes()); // Binding Request
    request[2..4].copy_from_slice(&0u16.to_be_bytes()); // no attributes
    request[4..8].copy_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
    request[8..20].copy_from_slice(&txid);

    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    let mut last_err = anyhow!("no STUN response from {server} within {timeout:?}");
    while Instant::now() < deadline {
        socket
            .send_to(&request, server)
            .context("sending STUN binding request")?;
        let wait_until = (Instant::now() + Duration::from_millis(100)).min(deadline);
        while let Some(left) = wait_until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            socket
                .set_read_timeout(Some(left))
                .context("set_read_timeout")?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                // ICMP port unreachable (server not listening yet) surfaces as ConnectionRefused.
                Err(e) => {
                    last_err = anyhow!(e).context(format!("STUN to {server}"));
                    thread::sleep(left.min(Duration::from_millis(20)));
                    break;
                }
            };
            if from != server {
                continue;
            }
            match parse_stun_binding_success(&buf[..n], &txid) {
                Ok(Some(mapped)) => return Ok(mapped),
                Ok(None) => continue, // another transaction's response
                Err(e) => last_err = e,
            }
        }
    }
    Err(last_err)
}

/// `Ok(None)` if the message belongs to another transaction.
fn parse_stun_binding_success(msg: &[u8], txid: &[u8; 12]) -> Result<Option<SocketAddr>> {
    ensure!(msg.len() >= 20, "short STUN message ({} bytes)", msg.len());
    let msg_type = u16::from_be_bytes([msg[0], msg[1]]);
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let cookie = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    ensure!(
        cookie == STUN_MAGIC_COOKIE,
        "not a STUN message (cookie {cookie:#x})"
    );
    if msg[8..20] != txid[..] {
        return Ok(None);
    }
    ensure!(
        msg_type == 0x0101,
        "STUN response type {msg_type:#06x}, expected Binding Success 0x0101"
    );
    ensure!(msg.len() >= 20 + len, "truncated STUN message");
    let mut attrs = &msg[20..20 + len];
    while attrs.len() >= 4 {
        let attr_type = u16::from_be_bytes([attrs[0], attrs[1]]);
        let attr_len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        ensure!(attrs.len() >= 4 + attr_len, "truncated STUN attribute");
        let value = &attrs[4..4 + attr_len];
        // XOR-MAPPED-ADDRESS, IPv4
        if attr_type == 0x0020 && attr_len >= 8 && value[1] == 0x01 {
            let cookie = STUN_MAGIC_COOKIE.to_be_bytes();
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (STUN_MAGIC_COOKIE >> 16) as u16;
            let ip = Ipv4Addr::new(
                value[4] ^ cookie[0],
                value[5] ^ cookie[1],
                value[6] ^ cookie[2],
                value[7] ^ cookie[3],
            );
            return Ok(Some(SocketAddr::from((ip, port))));
        }
        let padded = (4 + attr_len).div_ceil(4) * 4;
        attrs = &attrs[padded.min(attrs.len())..];
    }
    bail!("STUN Binding Success without an IPv4 XOR-MAPPED-ADDRESS")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ------------------------------------------------------------------------------------------------
// Helpers

/// Ports handed out by this process, so concurrent tests never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn claim(ports: &[u16]) -> bool {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if ports.iter().any(|p| set.contains(p)) {
        return false;
    }
    set.extend(ports);
    true
}

/// A TCP port on 127.0.0.1 that is free now and not handed out before by this process.
pub fn free_tcp_port() -> Result<u16> {
    for _ in 0..1000 {
        let port = TcpListener::bind((LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("binding 127.0.0.1:0 (TCP)")?
            .port();
        if claim(&[port]) {
            return Ok(port);
        }
    }
    bail!("no free TCP port found")
}

/// A UDP port on 127.0.0.1 that is free now and not handed out before by this process.
pub fn free_udp_port() -> Result<u16> {
    for _ in 0..1000 {
        let port = UdpSocket::bind((LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .context("binding 127.0.0.1:0 (UDP)")?
            .port();
        if claim(&[port]) {
            return Ok(port);
        }
    }
    bail!("no free UDP port found")
}

/// A port free for both UDP and TCP (turnserver listens on both).
fn free_udp_tcp_port() -> Result<u16> {
    for _ in 0..1000 {
        let udp = UdpSocket::bind((LOCALHOST, 0)).context("binding 127.0.0.1:0 (UDP)")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((LOCALHOST, port)).is_ok() && claim(&[port]) {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP found")
}

/// `len` consecutive free UDP ports below the kernel's ephemeral range (where `free_*_port` and
/// clients' sockets get theirs), as an inclusive range.
fn free_udp_port_range(len: u16) -> Result<(u16, u16)> {
    const LOW: u64 = 20_000;
    const HIGH: u64 = 32_000;
    let slots = (HIGH - LOW) / u64::from(len);
    let mut state = next_seed();
    for _ in 0..200 {
        let slot = splitmix64(&mut state) % slots;
        let start = u16::try_from(LOW + slot * u64::from(len)).context("port range")?;
        let ports: Vec<u16> = (start..start + len).collect();
        let all_free = ports
            .iter()
            .all(|&p| UdpSocket::bind((LOCALHOST, p)).is_ok());
        if all_free && claim(&ports) {
            return Ok((start, start + len - 1));
        }
    }
    bail!("no range of {len} free UDP ports found in {LOW}..{HIGH}")
}

/// Waits until a TCP connection to `addr` succeeds.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(
            &addr,
            left.clamp(Duration::from_millis(1), Duration::from_secs(1)),
        ) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow!(e).context(format!(
                    "{addr} not accepting TCP connections after {timeout:?}"
                )));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The SHA-256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Writes `bytes` pseudo-random bytes to `path` and returns their SHA-256 (lowercase hex).
/// Deterministic: the same `bytes` always gives the same content.
pub fn write_random_file(path: impl AsRef<Path>, bytes: u64) -> Result<String> {
    write_random_file_seeded(path, bytes, 0x6275_7272_6f77)
}

/// Like [`write_random_file`] with an explicit seed, for several distinct files of one size.
pub fn write_random_file_seeded(path: impl AsRef<Path>, bytes: u64, seed: u64) -> Result<String> {
    let path = path.as_ref();
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut state = seed ^ bytes.rotate_left(32);
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        fill_random(&mut block, &mut state);
        let n = usize::try_from(left.min(block.len() as u64)).context("block size")?;
        hasher.update(&block[..n]);
        out.write_all(&block[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hex(&hasher.finalize()))
}

fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(state).to_le_bytes());
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh seed per call (time, pid, counter): not for files, only for ids and port picking.
fn next_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut s = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    splitmix64(&mut s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a short command to completion; on failure the error includes its output.
fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}: {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Processes

/// A started service process with its log file; stopped with all its descendants on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
    stop_signal: Signal,
    /// Kill the descendants before signalling the main process (for daemons that leave their
    /// children running when they exit, like sshd).
    descendants_first: bool,
    /// The value of [`OWNER_ENV`] in the daemon's environment (inherited by its descendants).
    owner: String,
}

/// Set (to the service's temp dir) in each service's environment and so in every process it
/// starts, even ones that get orphaned (a command an ssh client left running): on drop, every
/// process carrying it is killed.
pub const OWNER_ENV: &str = "BURROW_E2E_OWNER";

impl Daemon {
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: &Path,
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Daemon> {
        let owner = dir.display().to_string();
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let file2 = file.try_clone().context("dup of the log file")?;
        cmd.env(OWNER_ENV, &owner);
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Daemon {
            name,
            child,
            log: log.to_owned(),
            stop_signal,
            descendants_first: false,
            owner,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_TAIL_LINES)
    }

    /// Fails (with the log tail) if the process has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited during startup ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            ),
            Err(e) => Err(anyhow!(e).context(format!("waiting for {}", self.name))),
        }
    }

    /// Fails (with the log tail) once `deadline` has passed.
    fn check_deadline(&self, deadline: Instant) -> Result<()> {
        ensure!(
            Instant::now() < deadline,
            "{} not ready after {START_TIMEOUT:?}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        );
        Ok(())
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop_tree();
        }
        // Whatever else it started, including orphans no longer in its process tree.
        let marked = processes_with_env(OWNER_ENV, &self.owner);
        for p in &marked {
            let _ = kill(to_pid(p.pid), Signal::SIGKILL);
        }
        wait_until_dead(&marked, Duration::from_secs(5));
    }

    fn stop_tree(&mut self) {
        let pid = self.pid();
        // Descendants may live in their own sessions (postgres backends, sshd connection
        // handlers) and may outlive the main process: remember them to kill the survivors.
        let tree = process_tree(pid);
        if self.descendants_first {
            kill_bottom_up(&tree);
        }
        let _ = kill(to_pid(pid), self.stop_signal);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => break,
            }
        }
        let survivors: Vec<ProcStat> = tree
            .into_iter()
            .filter(|p| p.pid != pid && p.is_same_and_alive())
            .collect();
        for p in &survivors {
            let _ = kill(to_pid(p.pid), Signal::SIGKILL);
        }
        wait_until_dead(&survivors, Duration::from_secs(5));
    }

    /// Live processes started by this service: its process tree plus anything carrying its
    /// [`OWNER_ENV`]. Both are needed: daemons that set their process title (postgres, sshd)
    /// overwrite their /proc/PID/environ, and orphans leave the tree.
    fn owned_pids(&self) -> Vec<u32> {
        let mut pids = process_tree_pids(self.pid());
        for p in processes_with_env(OWNER_ENV, &self.owner) {
            if !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
        pids
    }
}

fn wait_until_dead(procs: &[ProcStat], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while procs.iter().any(ProcStat::is_same_and_alive) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes (other than this one) whose initial environment has `name=value`.
fn processes_with_env(name: &str, value: &str) -> Vec<ProcStat> {
    let needle = format!("{name}={value}");
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter_map(ProcStat::read)
        .filter(|p| !matches!(p.state, 'Z' | 'X'))
        .collect()
}

/// SIGKILLs `tree` minus its root level by level, deepest first, waiting (briefly) for each
/// level to be reaped by its still-running parents, so that nothing is orphaned as a zombie.
fn kill_bottom_up(tree: &[ProcStat]) {
    let mut depth: HashMap<u32, usize> = HashMap::new();
    for p in tree {
        let d = depth.get(&p.ppid).map_or(0, |d| d + 1);
        depth.insert(p.pid, d);
    }
    let max = depth.values().copied().max().unwrap_or(0);
    for level in (1..=max).rev() {
        let victims: Vec<&ProcStat> = tree
            .iter()
            .filter(|p| depth.get(&p.pid) == Some(&level))
            .collect();
        for p in &victims {
            if p.is_same_and_alive() {
                let _ = kill(to_pid(p.pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        // Orphans (parent 1) are reaped by init whenever it gets to it: don't wait for those.
        while victims.iter().any(|p| p.awaits_reaping_by_parent()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn to_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[derive(Clone, Copy, Debug)]
struct ProcStat {
    pid: u32,
    ppid: u32,
    state: char,
    start_time: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Still in the process table (possibly as a zombie) with a parent other than init.
    fn awaits_reaping_by_parent(&self) -> bool {
        ProcStat::read(self.pid)
            .is_some_and(|now| now.start_time == self.start_time && now.ppid != 1)
    }

    /// Still running (not a zombie) and not a recycled pid.
    fn is_same_and_alive(&self) -> bool {
        ProcStat::read(self.pid)
            .is_some_and(|now| now.start_time == self.start_time && !matches!(now.state, 'Z' | 'X'))
    }
}

fn process_tree(root: u32) -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<ProcStat>> = HashMap::new();
    let mut root_stat = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = ProcStat::read(pid) {
            if pid == root {
                root_stat = Some(stat);
            }
            children.entry(stat.ppid).or_default().push(stat);
        }
    }
    let mut tree: Vec<ProcStat> = root_stat.into_iter().collect();
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = children.get(&tree[i].pid) {
            tree.extend(kids.iter().copied());
        }
        i += 1;
    }
    tree
}

/// The pids of `pid` and all its live descendants (for checking that nothing is left behind).
pub fn process_tree_pids(pid: u32) -> Vec<u32> {
    process_tree(pid)
        .into_iter()
        .filter(|p| !matches!(p.state, 'Z' | 'X'))
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    ProcStat::read(pid).is_some_and(|p| !matches!(p.state, 'Z' | 'X'))
}
