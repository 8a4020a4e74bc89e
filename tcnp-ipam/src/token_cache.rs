//! On-disk token cache (0600 file in the data directory), keyed by Keystone endpoint,
//! user and project, so that short-lived plugin processes share one token.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use openstack::{Auth, Token, TokenStore};
use serde::{Deserialize, Serialize};

use crate::store::write_atomic;

/// A token file for one set of credentials.
pub struct FileTokenStore {
    path: PathBuf,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    token: Token,
}

impl FileTokenStore {
    /// The cache file for `auth` inside `dir`.
    pub fn new(dir: &Path, auth: &Auth) -> Self {
        let key = auth.cache_key();
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        Self { path: dir.join(format!("token-{:016x}.json", h.finish())), key }
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> Option<Token> {
        let bytes = std::fs::read(&self.path).ok()?;
        let cached: Cached = serde_json::from_slice(&bytes).ok()?;
        (cached.key == self.key).then_some(cached.token)
    }

    fn store(&self, token: &Token) {
        let cached = Cached { key: self.key.clone(), token: token.clone() };
        let result = serde_json::to_vec(&cached).map_err(std::io::Error::other).and_then(|b| write_atomic(&self.path, &b));
        if let Err(e) = result {
            log::warn!("cannot cache the Keystone token in {}: {e}", self.path.display());
        }
    }
}
