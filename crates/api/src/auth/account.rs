//! The signed-in caller ([`Account`]) and the cache of accounts built from `bk_auth` rows, so a
//! signed request reuses its account while the cached row is the same. Apart from the pure
//! signature functions because it holds state (an LRU cache behind a lock).

use super::mac::SecretKeys;
use bkjs_db::seal::Opened;
use bkjs_db::Row;
use serde_json::Value;
use std::sync::Arc;

/// The authenticated caller: its `bk_auth` row (without the secret).
#[derive(Clone)]
pub struct Account {
    /// Shared: an account is cloned into every request it signs.
    pub auth: Arc<Row>,
    /// Kept apart from the row so that printing an account never shows it.
    pub(crate) secret: Arc<str>,
    /// HMAC states keyed with `secret`, shared by the clones of this account.
    pub(crate) keys: Arc<SecretKeys>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Account {
    fn text(&self, name: &str) -> &str {
        self.auth.get(name).and_then(Value::as_str).unwrap_or("")
    }
    pub fn id(&self) -> &str {
        self.text("id")
    }
    pub fn login(&self) -> &str {
        self.text("login")
    }
    pub fn alias(&self) -> &str {
        self.text("alias")
    }
    /// What session cookies of this account are keyed with: its secret and, once it logged out,
    /// its session generation (`bk_auth.session_gen`), so logging out or changing the secret
    /// ends every session issued before.
    pub(crate) fn session_secret(&self) -> Vec<u8> {
        match self.auth.get("session_gen").and_then(Value::as_i64) {
            Some(g) if g != 0 => format!("{}\0{g}", self.secret).into_bytes(),
            _ => self.secret.as_bytes().to_vec(),
        }
    }

    /// The session generation (0 until the first logout).
    pub(crate) fn session_gen(&self) -> i64 {
        self.auth
            .get("session_gen")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// `bk_auth.type == "admin"`.
    pub fn is_admin(&self) -> bool {
        self.text("type") == "admin"
    }
}

/// The accounts built from `bk_auth` rows, by login, each with the shared row it was built from
/// ([`bkjs_db::Db::get_cached_shared`]): while the cached row is the same, a signed request
/// reuses its account instead of copying the row and taking the secret out again.
pub(crate) struct Accounts {
    built: parking_lot::Mutex<lru::LruCache<String, (std::sync::Arc<Row>, Account)>>,
}

impl Default for Accounts {
    fn default() -> Accounts {
        Accounts::new(1024)
    }
}

impl Accounts {
    /// Keeps the accounts of the last `logins` logins that signed a request.
    pub(crate) fn new(logins: usize) -> Accounts {
        let n = std::num::NonZeroUsize::new(logins.max(1)).expect("at least one");
        Accounts {
            built: parking_lot::Mutex::new(lru::LruCache::new(n)),
        }
    }

    /// The account of `row` (the `bk_auth` row of `login`), its secret opened by `open` (the
    /// seal of `bk_auth.secret`, [`bkjs_db::Db::unseal`]); `None` when it has no usable secret.
    /// The flag is true when the account was built just now from a secret stored before
    /// sealing existed, which the caller should write again (sealed).
    pub(crate) fn account(
        &self,
        login: &str,
        row: &std::sync::Arc<Row>,
        open: impl FnOnce(&Row) -> Option<Opened>,
    ) -> Option<(Account, bool)> {
        let mut built = self.built.lock();
        if let Some((from, account)) = built.get(login) {
            if std::sync::Arc::ptr_eq(from, row) {
                return Some((account.clone(), false));
            }
        }
        let (secret, legacy): (std::sync::Arc<str>, bool) = match open(row) {
            Some(Opened::Sealed(s)) if !s.is_empty() => (s.into(), false),
            Some(Opened::Legacy(s)) if !s.is_empty() => (s.into(), true),
            _ => {
                built.pop(login);
                return None;
            }
        };
        let mut auth = (**row).clone();
        auth.remove("secret");
        let account = Account {
            auth: std::sync::Arc::new(auth),
            secret,
            keys: Default::default(),
        };
        built.put(login.to_string(), (row.clone(), account.clone()));
        Some((account, legacy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn auth_row(secret: &str, alias: &str) -> Arc<Row> {
        let v = json!({"login": "al", "id": "1", "secret": secret, "alias": alias});
        match v {
            Value::Object(m) => Arc::new(m),
            _ => unreachable!("an object literal"),
        }
    }

    /// The secret column as stored, "enc:" values counting as sealed.
    fn plain(row: &Row) -> Option<Opened> {
        let s = row.get("secret").and_then(Value::as_str)?;
        Some(match s.strip_prefix("enc:") {
            Some(p) => Opened::Sealed(p.to_string()),
            None => Opened::Legacy(s.to_string()),
        })
    }

    #[test]
    fn accounts_are_reused_while_the_cached_row_is_the_same() {
        let accounts = Accounts::new(2);
        let row = auth_row("s1", "Al");
        let (a, legacy) = accounts.account("al", &row, plain).expect("an account");
        assert!(legacy, "a plaintext secret is legacy");
        assert_eq!(&*a.secret, "s1");
        assert!(
            a.auth.get("secret").is_none(),
            "the secret is not in the row"
        );
        assert!(!format!("{a:?}").contains("s1"), "nor in its Debug form");
        assert_eq!(a.alias(), "Al");
        let (again, legacy) = accounts.account("al", &row, plain).expect("an account");
        assert!(!legacy, "reported once, when built");
        assert!(
            Arc::ptr_eq(&a.auth, &again.auth),
            "the same row: the same account"
        );
        // A new cached row (a changed secret) builds the account again.
        let changed = auth_row("enc:s2", "Al");
        let (b, legacy) = accounts.account("al", &changed, plain).expect("an account");
        assert!(!legacy);
        assert_eq!(&*b.secret, "s2");
        assert!(!Arc::ptr_eq(&a.auth, &b.auth));
        // A row without a secret signs nothing, and forgets the account built before.
        assert!(accounts.account("al", &auth_row("", "Al"), plain).is_none());
        assert!(accounts.built.lock().peek("al").is_none());
    }
}
