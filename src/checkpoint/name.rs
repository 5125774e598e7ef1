//! The run name (`--name`, file key `run.name`): what keeps several df2redis runs that share a
//! target apart. It is part of every checkpoint marker key, of the writers' connection name
//! (so a run closes only its own stale writers) and of the run's lease key ([`crate::lease`]).
//!
//! By default it is derived from the source address (`df2redis-<host>-<port>`), so two runs
//! against two different masters never share a name; two runs against the same master (say,
//! with disjoint `--include` rules) need explicit names.

/// Longest name accepted: it appears in every marker key.
const MAX_LEN: usize = 100;

/// Check a name given with `--name`: 1 to 100 characters among `A-Z a-z 0-9 . _ -`. Those
/// keep it out of the key syntax that matters: no `:` (it ends the name inside a key), no
/// braces (a cluster marker's hashtag must stay its slot tag), no glob characters (the run's
/// SCAN pattern must match only its keys), nothing CLIENT SETNAME refuses.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(format!("run name {name:?} must be 1 to {MAX_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return Err(format!("run name {name:?}: {c:?} is not allowed (letters, digits, '.', '_' and '-' only)"));
    }
    if name == "done" {
        // `df2redis:checkpoint:done:...` are the done markers of the earlier unnamed format.
        return Err("run name \"done\" is reserved (earlier versions' markers use it)".into());
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The default name for a source `host:port`: `df2redis-<host>-<port>`, every character a name
/// may not hold replaced by `_` (an IPv6 address's colons and brackets).
pub fn default_for(source_addr: &str) -> String {
    let (host, port) = match source_addr.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
        _ => (source_addr, "6379"),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut name: String = format!("df2redis-{host}-{port}").chars().map(|c| if allowed(c) { c } else { '_' }).collect();
    name.truncate(MAX_LEN);
    name
}

/// The writers' connection name of run `run` (`CLIENT SETNAME`).
pub fn writer_name(run: &str) -> String {
    format!("df2redis-writer-{run}")
}

/// The writers' connection name of the earlier unnamed format.
pub const LEGACY_WRITER_NAME: &str = "df2redis-writer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_derived() {
        assert!(validate("shard-a_1.x").is_ok());
        for bad in ["", "a:b", "a{b}", "a*", "a b", "done"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert!(validate(&"x".repeat(101)).is_err());
        assert_eq!(default_for("10.0.0.1:6380"), "df2redis-10.0.0.1-6380");
        assert_eq!(default_for("[::1]:7000"), "df2redis-__1-7000");
        assert_eq!(default_for("dragonfly"), "df2redis-dragonfly-6379");
        assert_ne!(default_for("127.0.0.1:7001"), default_for("127.0.0.1:7002"));
        for a in ["10.0.0.1:6380", "[::1]:7000", "h:x:y"] {
            assert!(validate(&default_for(a)).is_ok(), "{a}");
        }
    }
}
