//! What kind of server the target is: product (Redis or Valkey), version and loaded modules,
//! read from `INFO server` and `MODULE LIST`. What df2redis may send depends on it (commands
//! and arguments a version lacks, module commands), so every node of a cluster is asked and
//! the least capable answer decides.

use std::fmt;

use super::resp::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Redis,
    Valkey,
}

/// A `major.minor.patch` version; missing parts read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.trim().split('.').map(|p| p.parse::<u32>());
        let major = it.next()?.ok()?;
        let minor = it.next().unwrap_or(Ok(0)).ok()?;
        let patch = it.next().unwrap_or(Ok(0)).ok()?;
        Some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub product: Product,
    /// The product's own version (`valkey_version` for Valkey, else `redis_version`).
    pub version: Version,
    /// The Redis version whose commands and replies the server speaks: `redis_version`, which
    /// Valkey keeps at 7.2.4 for client compatibility.
    pub redis_compat: Version,
    /// Module names as `MODULE LIST` gives them (`ReJSON`, `bf`), empty when it is refused.
    pub modules: Vec<String>,
}

impl ServerInfo {
    /// From the text of `INFO server` and the reply to `MODULE LIST` (an error reply, as from
    /// a server or user without it, means no modules).
    pub fn parse(info_server: &str, module_list: &Reply) -> Result<ServerInfo, String> {
        let field = |name: &str| {
            info_server.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
        };
        let redis_compat = field("redis_version")
            .and_then(Version::parse)
            .ok_or_else(|| "INFO server has no redis_version field".to_string())?;
        let (product, version) = match field("valkey_version") {
            Some(v) => (Product::Valkey, Version::parse(v).ok_or_else(|| format!("valkey_version {v:?} is not a version"))?),
            None if field("server_name") == Some("valkey") => (Product::Valkey, redis_compat),
            None => (Product::Redis, redis_compat),
        };
        Ok(ServerInfo { product, version, redis_compat, modules: module_names(module_list) })
    }

    pub fn has_module(&self, name: &str) -> bool {
        self.modules.iter().any(|m| m.eq_ignore_ascii_case(name))
    }

    /// Whether the server takes Redis 7.0's stream metadata (`XSETID ... ENTRIESADDED n
    /// MAXDELETEDID id`, `XGROUP CREATE ... ENTRIESREAD n`).
    pub fn has_stream_meta(&self) -> bool {
        self.redis_compat >= Version(7, 0, 0)
    }

    /// Why df2redis cannot write into this server, if it cannot: before Redis 6.2 there is no
    /// `SET ... PXAT` (every TTL is written as an absolute time) and no `XGROUP
    /// CREATECONSUMER` (stream consumers).
    pub fn unsupported(&self) -> Option<String> {
        (self.redis_compat < Version(6, 2, 0)).then(|| {
            format!("the target speaks Redis {}; df2redis needs Redis 6.2 or later (or Valkey)", self.redis_compat)
        })
    }

    /// The RDB format version the server writes and reads: a DUMP payload declaring a newer
    /// one is refused. Redis 5.0-6.2: 9, 7.0: 10, 7.2: 11, 7.4 and later: 12; Valkey 7.2-8.x
    /// keep Redis 7.2's format (their `redis_version` says 7.2.4).
    pub fn rdb_version(&self) -> u16 {
        match self.redis_compat {
            v if v < Version(7, 0, 0) => 9,
            v if v < Version(7, 2, 0) => 10,
            v if v < Version(7, 4, 0) => 11,
            _ => 12,
        }
    }

    /// Whether the server takes `RESTORE` with the `ABSTTL` option (Redis 5.0 on).
    pub fn has_restore_absttl(&self) -> bool {
        self.redis_compat >= Version(5, 0, 0)
    }

    /// Whether the server loads a DUMP payload of RDB value type `ty`, as df2redis builds it
    /// ([`crate::replay::dump`]): the type exists in the server's RDB version, or df2redis
    /// re-encodes it to an older form that does.
    pub fn loads_type(&self, ty: u8) -> bool {
        use crate::replay::dump::{older_form, rdb_version_for};
        let rdb = self.rdb_version();
        self.has_restore_absttl() && (rdb_version_for(ty) <= rdb || older_form(ty).is_some_and(|o| rdb_version_for(o) <= rdb))
    }

    /// The least capable of several servers (a cluster's masters): the lowest compatibility
    /// version, and only the modules every one has.
    pub fn least(all: &[ServerInfo]) -> Option<ServerInfo> {
        let mut it = all.iter();
        let mut out = it.next()?.clone();
        for s in it {
            if s.redis_compat < out.redis_compat {
                out.redis_compat = s.redis_compat;
                out.version = s.version;
                out.product = s.product;
            }
            out.modules.retain(|m| s.has_module(m));
        }
        Some(out)
    }
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.product {
            Product::Redis => write!(f, "Redis {}", self.version)?,
            Product::Valkey => write!(f, "Valkey {} (Redis {} compatible)", self.version, self.redis_compat)?,
        }
        if !self.modules.is_empty() {
            write!(f, " with modules {}", self.modules.join(", "))?;
        }
        Ok(())
    }
}

/// The `name` of every module in a `MODULE LIST` reply: an array of per-module arrays of
/// field/value pairs. Names are bulk strings (bytes), compared as text.
fn module_names(reply: &Reply) -> Vec<String> {
    let Reply::Array(Some(mods)) = reply else { return Vec::new() };
    mods.iter()
        .filter_map(|m| match m {
            Reply::Array(Some(kv)) => kv.chunks(2).find_map(|p| match p {
                [k, Reply::Bulk(Some(v))] if text(k).as_deref() == Some("name") => Some(String::from_utf8_lossy(v).into_owned()),
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

fn text(r: &Reply) -> Option<String> {
    match r {
        Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Reply::Status(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn redis_valkey_and_modules() {
        let r = ServerInfo::parse("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n", &Reply::Array(Some(vec![]))).unwrap();
        assert_eq!((r.product, r.version), (Product::Redis, Version(7, 0, 15)));
        assert!(r.has_stream_meta());
        let v = ServerInfo::parse("redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n", &Reply::Error("ERR".into())).unwrap();
        assert_eq!((v.product, v.version, v.redis_compat), (Product::Valkey, Version(8, 1, 8), Version(7, 2, 4)));
        let old = ServerInfo::parse("redis_version:6.2.14\r\n", &Reply::Array(None)).unwrap();
        assert!(!old.has_stream_meta() && old.unsupported().is_none());
        let older = ServerInfo::parse("redis_version:6.0.16\r\n", &Reply::Array(None)).unwrap();
        assert!(older.unsupported().unwrap().contains("Redis 6.0.16"));
        let mods = Reply::Array(Some(vec![
            Reply::Array(Some(vec![bulk("name"), bulk("bf"), bulk("ver"), Reply::Int(20802)])),
            Reply::Array(Some(vec![bulk("name"), bulk("ReJSON"), bulk("ver"), Reply::Int(20803)])),
        ]));
        let m = ServerInfo::parse("redis_version:7.0.15\r\n", &mods).unwrap();
        assert!(m.has_module("rejson") && m.has_module("bf") && !m.has_module("search"));
        let least = ServerInfo::least(&[m.clone(), old.clone()]).unwrap();
        assert_eq!(least.redis_compat, Version(6, 2, 14));
        assert!(least.modules.is_empty());
        assert!(ServerInfo::parse("nothing here", &Reply::Array(None)).is_err());
        use crate::protocol::rdb_type as t;
        assert_eq!((old.rdb_version(), r.rdb_version(), v.rdb_version()), (9, 10, 11));
        assert!(old.loads_type(t::SET_INTSET) && old.loads_type(t::HASH) && old.loads_type(t::HASH_LISTPACK));
        assert!(!old.loads_type(t::STREAM_LISTPACKS_2));
        assert!(r.loads_type(t::LIST_QUICKLIST_2) && !r.loads_type(t::STREAM_LISTPACKS_3));
        assert!(v.loads_type(t::STREAM_LISTPACKS_3));
    }
}
