//! The datastore flags shared by `skiff server` and `skiff datastore`, and the `skiff datastore`
//! tools: snapshots and migration between SQLite and etcd.
//!
//! - `snapshot save FILE`: SQLite through SQLite's online backup API (the server may run);
//!   etcd through etcd's maintenance snapshot (etcd's own format, the member's whole keyspace).
//! - `snapshot restore FILE`: the file's format decides. An SQLite snapshot replaces
//!   `<data-dir>/db/state.db` (the server must be stopped; the old WAL is discarded). An etcd
//!   snapshot is restored into a new member data directory with
//!   `etcdctl snapshot restore FILE --data-dir DIR --name NAME --initial-cluster NAME=PEER
//!   --initial-advertise-peer-urls PEER` (`etcdutl` where installed); start etcd on that directory
//!   with the same name and peer URL, then `skiff server --datastore-endpoint` on it.
//! - `migrate --from URL --to URL`: copies every key under `/registry/` at one source revision,
//!   values byte for byte. Revisions cannot be carried between backends: every object gets a new
//!   resourceVersion, so clients re-list (watches resuming from an old resourceVersion get 410
//!   Gone, as after any restore). Stop the server first; a non-empty target needs `--force`
//!   (the target then holds exactly the source's keys).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use skiff_store::tools::{self, EtcdRestore};
use skiff_store::{EtcdOptions, EtcdStore, SqliteOptions, SqliteStore, Store};

/// Where the cluster state lives: embedded SQLite (default) or etcd.
#[derive(Args, Debug, Clone, Default)]
pub struct DatastoreArgs {
    /// etcd client URLs, comma-separated (`http://127.0.0.1:2379,…`); when set, the cluster
    /// state lives in etcd instead of the embedded SQLite database.
    #[arg(long, value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,
    /// CA certificate (PEM) that signed the etcd members' serving certificates.
    #[arg(long)]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long)]
    pub datastore_certfile: Option<PathBuf>,
    /// Client certificate key (PEM) for etcd.
    #[arg(long)]
    pub datastore_keyfile: Option<PathBuf>,
}

impl DatastoreArgs {
    /// True when the datastore is etcd.
    pub fn is_etcd(&self) -> bool {
        !self.datastore_endpoint.is_empty()
    }

    /// The etcd options for these flags (background compaction as given).
    pub fn etcd_options(&self, compaction: Option<Duration>) -> Result<EtcdOptions> {
        for e in &self.datastore_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("--datastore-endpoint {e:?}: expected an etcd URL (http://host:2379 or https://host:2379)");
            }
        }
        let mut opts = EtcdOptions::new(self.datastore_endpoint.clone());
        opts.ca_file = self.datastore_cafile.clone();
        opts.cert_file = self.datastore_certfile.clone();
        opts.key_file = self.datastore_keyfile.clone();
        opts.compaction_interval = compaction;
        Ok(opts)
    }

    /// Connects to etcd.
    pub async fn connect_etcd(&self, compaction: Option<Duration>) -> Result<Arc<EtcdStore>> {
        let opts = self.etcd_options(compaction)?;
        EtcdStore::connect(opts).await.with_context(|| {
            format!(
                "connecting to etcd at {}",
                self.datastore_endpoint.join(",")
            )
        })
    }
}

/// The SQLite database file of a data directory.
pub fn sqlite_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db").join("state.db")
}

/// Flags of `skiff datastore`.
#[derive(Args, Debug)]
pub struct DatastoreCommand {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Save or restore a snapshot of the datastore.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotWhat,
    },
    /// Copy every object from one datastore to another (`sqlite:///path/state.db`,
    /// `http://host:2379[,…]`). Stop the server first. resourceVersions change.
    Migrate(MigrateArgs),
}

#[derive(Subcommand, Debug)]
enum SnapshotWhat {
    /// Write a snapshot of the running (or stopped) datastore to FILE.
    Save(SnapshotArgs),
    /// Restore FILE: SQLite snapshots replace the data dir's database (server stopped); etcd
    /// snapshots become a new etcd data directory (`--etcd-data-dir`).
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The server's data directory (SQLite datastore)
    /// [default: /var/lib/skiff as root, else $XDG_DATA_HOME/skiff]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    datastore: DatastoreArgs,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// etcd snapshots: the new member data directory to create (must not exist).
    #[arg(long)]
    etcd_data_dir: Option<PathBuf>,
    /// etcd snapshots: the restored member's name.
    #[arg(long, default_value = "default")]
    etcd_name: String,
    /// etcd snapshots: the restored member's peer URL.
    #[arg(long, default_value = "http://localhost:2380")]
    etcd_peer_url: String,
    /// etcd snapshots: `name=peerURL,…` of every member of the restored cluster (run the
    /// restore once per member) [default: this member alone].
    #[arg(long)]
    etcd_initial_cluster: Option<String>,
}

#[derive(Args, Debug)]
struct MigrateArgs {
    /// Source: `sqlite:///path/to/state.db` or `http(s)://host:2379[,…]`.
    #[arg(long)]
    from: String,
    /// Target, in the same forms.
    #[arg(long)]
    to: String,
    /// Overwrite a target that already holds objects.
    #[arg(long)]
    force: bool,
    /// TLS files for an etcd side.
    #[command(flatten)]
    datastore: DatastoreArgs,
}

/// Runs `skiff datastore …`.
pub async fn run(cmd: DatastoreCommand) -> Result<()> {
    match cmd.what {
        What::Snapshot {
            what: SnapshotWhat::Save(a),
        } => save(a).await,
        What::Snapshot {
            what: SnapshotWhat::Restore(a),
        } => restore(a),
        What::Migrate(a) => migrate(a).await,
    }
}

async fn save(a: SnapshotArgs) -> Result<()> {
    if a.datastore.is_etcd() {
        let store = a.datastore.connect_etcd(None).await?;
        let size = tools::etcd_snapshot_save(&store, &a.file).await?;
        println!(
            "saved an etcd snapshot of {size} bytes to {}",
            a.file.display()
        );
    } else {
        let data_dir = a.data_dir.unwrap_or_else(crate::default_data_dir);
        let db = sqlite_path(&data_dir);
        tools::sqlite_snapshot_save(&db, &a.file)?;
        println!(
            "saved a snapshot of {} to {}",
            db.display(),
            a.file.display()
        );
    }
    Ok(())
}

/// True if `file` starts with SQLite's file header.
fn is_sqlite_file(file: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let n = f.read(&mut head)?;
    Ok(n == 16 && &head == b"SQLite format 3\0")
}

fn restore(a: RestoreArgs) -> Result<()> {
    let file = &a.snapshot.file;
    if is_sqlite_file(file)? {
        if a.snapshot.datastore.is_etcd() || a.etcd_data_dir.is_some() {
            bail!(
                "{} is an SQLite snapshot: restore it into a data dir, or migrate it to etcd with `skiff datastore migrate`",
                file.display()
            );
        }
        let data_dir = a.snapshot.data_dir.unwrap_or_else(crate::default_data_dir);
        let db = sqlite_path(&data_dir);
        let rev = tools::sqlite_snapshot_restore(file, &db)?;
        println!(
            "restored {} (revision {rev}) into {}; start the server to use it",
            file.display(),
            db.display()
        );
        return Ok(());
    }
    let Some(data_dir) = a.etcd_data_dir else {
        bail!(
            "{} is an etcd snapshot: give --etcd-data-dir, the new member data directory to restore it into",
            file.display()
        );
    };
    if data_dir.exists() {
        bail!(
            "{} already exists: etcd restores into a new data directory",
            data_dir.display()
        );
    }
    let r = EtcdRestore {
        snapshot: file.clone(),
        data_dir: data_dir.clone(),
        name: a.etcd_name.clone(),
        peer_url: a.etcd_peer_url.clone(),
        initial_cluster: a.etcd_initial_cluster.clone(),
    };
    r.run()?;
    println!(
        "restored {} into {}; start etcd with --data-dir {} --name {} --initial-advertise-peer-urls {}, then skiff server --datastore-endpoint on it",
        file.display(),
        data_dir.display(),
        data_dir.display(),
        a.etcd_name,
        a.etcd_peer_url
    );
    Ok(())
}

/// Opens one side of a migration.
async fn open_url(url: &str, tls: &DatastoreArgs, is_target: bool) -> Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        if path.as_os_str().is_empty() {
            bail!("{url}: expected sqlite:///path/to/state.db");
        }
        if !is_target && !path.exists() {
            bail!("{url}: no database at {}", path.display());
        }
        if path.exists() {
            tools::sqlite_ensure_unused(&path)?;
        }
        let mut opts = SqliteOptions::new(&path);
        // History is not migrated: no compaction while copying.
        opts.compaction_interval = Duration::from_secs(24 * 3600);
        let store: Arc<dyn Store> =
            SqliteStore::open(opts).with_context(|| format!("opening {}", path.display()))?;
        return Ok(store);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let args = DatastoreArgs {
            datastore_endpoint: url.split(',').map(str::to_owned).collect(),
            ..tls.clone()
        };
        let store: Arc<dyn Store> = args.connect_etcd(None).await?;
        return Ok(store);
    }
    bail!("{url}: unsupported datastore URL (use sqlite:///path/to/state.db or http://host:2379)")
}

async fn migrate(a: MigrateArgs) -> Result<()> {
    let from = open_url(&a.from, &a.datastore, false).await?;
    let to = open_url(&a.to, &a.datastore, true).await?;
    let report = tools::copy_all(&*from, &*to, "/registry/", a.force)
        .await
        .context("copying")?;
    println!(
        "copied {} keys from {} (revision {}) to {}{}; resourceVersions changed: clients re-list",
        report.copied,
        a.from,
        report.source_revision,
        a.to,
        if report.removed > 0 {
            format!(", removed {} keys the source does not have", report.removed)
        } else {
            String::new()
        }
    );
    Ok(())
}
