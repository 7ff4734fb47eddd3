//! What the operations' tests against libvirt's `test:///default` driver share: a run's context in a temp dir, a connection, the driver's pool.

use tempfile::TempDir;
use virtup_core::{Config, DataDir, Paths};
use virtup_libvirt::Hypervisor;

use crate::context::{Context, SHORT_LOCK_TIMEOUT};

/// The directory pool `test:///default` comes with (at `/default-pool`).
pub const POOL: &str = "default-pool";

/// A run's context on `test:///default` with an empty config; `owned` makes the data dir and its owner id.
pub fn context(dir: &TempDir, owned: bool) -> Context {
    let root = dir.path();
    let paths = Paths::new(
        root.join("etc"),
        root.join("config"),
        root.join("data"),
        "test:///default",
    );
    if owned {
        DataDir::open(&paths.data_dir)
            .unwrap()
            .ensure_owner_id(SHORT_LOCK_TIMEOUT)
            .unwrap();
    }
    Context {
        data: DataDir::at(&paths.data_dir),
        paths,
        config: Config::default(),
    }
}

/// Every connection to `test:///default` has a state of its own: a test makes one and passes it on.
pub fn test_hv() -> Hypervisor {
    Hypervisor::connect("test:///default").unwrap()
}

pub fn volume_exists(hv: &Hypervisor, name: &str) -> bool {
    hv.volume_info(POOL, name).unwrap().is_some()
}

/// A test-driver node of its own whose pool `default-pool` is the directory `dir/pool`, for runs
/// whose (scripted) tools write files into the pool; its URI and a connection to it.
pub fn node_with_pool_dir(dir: &TempDir) -> (String, Hypervisor) {
    let pool = dir.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            "<node>\n\
             <network><name>default</name><bridge name='virbr0'/><forward/>\
             <ip address='192.168.122.1' netmask='255.255.255.0'/></network>\n\
             <pool type='dir'><name>{POOL}</name><target><path>{}</path></target></pool>\n\
             </node>\n",
            pool.display()
        ),
    )
    .unwrap();
    let uri = format!("test://{}", node.display());
    let hv = Hypervisor::connect(&uri).unwrap();
    (uri, hv)
}
