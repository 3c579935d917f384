//! `--redis-url`: one Redis, or a Redis Cluster.
//!
//! `redis://host:port` is one Redis. `redis-cluster://host:port,host:port,...` is a cluster,
//! given by any of its nodes: the client asks one of them for the slot map and connects to
//! every primary. The comma list is how operators write seed nodes elsewhere (`redis-cli -c`,
//! most client libraries); fred spells it as `?node=host:port` query parameters, which are
//! accepted as well. TLS (`rediss://`) is refused: this build has no TLS connector.

use fred::prelude::Config as RedisConfig;

use super::BackendError;

/// What `--redis-url` may start with: one Redis, a cluster, a Sentinel-managed Redis.
const SCHEMES: [&str; 3] = ["redis", "redis-cluster", "redis-sentinel"];

/// The client configuration `url` names.
///
/// # Errors
/// [`BackendError::InvalidUrl`] if it is not a Redis or Redis Cluster URL, naming what is
/// wrong but never quoting the URL: it may carry a password, and startup errors are logged.
pub fn parse(url: &str) -> Result<RedisConfig, BackendError> {
    let url = with_seed_nodes_as_query(url)?;
    RedisConfig::from_url(&url).map_err(|error| BackendError::InvalidUrl(error.details().to_string()))
}

/// `redis-cluster://user:pass@a:1,b:2/?x=y` as `redis-cluster://user:pass@a:1/?x=y&node=b:2`.
fn with_seed_nodes_as_query(url: &str) -> Result<String, BackendError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(BackendError::InvalidUrl("the URL has no scheme (redis://, redis-cluster://)".into()));
    };
    // Without a TLS connector built in, the client library would connect in plain text and
    // only log a warning: refuse instead of downgrading quietly.
    if scheme.starts_with("rediss") {
        return Err(BackendError::InvalidUrl(format!(
            "{scheme}:// asks for TLS, which this build does not include; use redis:// on a private network \
             or a TLS tunnel (stunnel, a service mesh) to Redis"
        )));
    }
    if !SCHEMES.contains(&scheme) {
        // Quoted only when it looks like a scheme: text before `://` could hold credentials.
        let named = if scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') { scheme } else { "given" };
        return Err(BackendError::InvalidUrl(format!("the {named} scheme is not one of {SCHEMES:?}")));
    }
    if !scheme.ends_with("-cluster") {
        return Ok(url.to_string());
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let mut nodes = hosts.split(',');
    let first = nodes.next().unwrap_or_default();
    let others: Vec<&str> = nodes.collect();
    if first.is_empty() || others.iter().any(|node| node.is_empty()) {
        return Err(BackendError::InvalidUrl("the cluster URL lists an empty node".into()));
    }
    let mut rewritten = format!("{scheme}://");
    if let Some(credentials) = credentials {
        rewritten.push_str(credentials);
        rewritten.push('@');
    }
    rewritten.push_str(first);
    rewritten.push_str(tail);
    for (k, node) in others.iter().enumerate() {
        let separator = if k == 0 && !tail.contains('?') { '?' } else { '&' };
        rewritten.push(separator);
        rewritten.push_str("node=");
        rewritten.push_str(node);
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use fred::types::config::{Server, ServerConfig};

    use super::*;

    /// The seed nodes, in a fixed order (the client tries them in any).
    fn hosts(config: &RedisConfig) -> Vec<Server> {
        match &config.server {
            ServerConfig::Clustered { hosts, .. } => {
                let mut hosts = hosts.clone();
                hosts.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
                hosts
            }
            other => panic!("not a cluster: {other:?}"),
        }
    }

    #[test]
    fn one_redis_is_not_a_cluster() {
        let config = parse("redis://127.0.0.1:6380").expect("valid");
        assert!(!config.server.is_clustered());
    }

    #[test]
    fn a_comma_list_names_every_seed_node() {
        let config = parse("redis-cluster://127.0.0.1:7001,127.0.0.1:7002,10.0.0.3:7003").expect("valid");
        assert_eq!(
            hosts(&config),
            vec![Server::new("10.0.0.3", 7003), Server::new("127.0.0.1", 7001), Server::new("127.0.0.1", 7002)]
        );
    }

    #[test]
    fn credentials_and_query_parameters_survive_the_list() {
        let config = parse("redis-cluster://ridecast:s3cret@a:7001,b:7002?node=c:7003").expect("valid");
        assert_eq!(hosts(&config), vec![Server::new("a", 7001), Server::new("b", 7002), Server::new("c", 7003)]);
        assert_eq!(config.username.as_deref(), Some("ridecast"));
        assert_eq!(config.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn fred_spelling_is_accepted_too() {
        let config = parse("redis-cluster://a:7001?node=b:7002").expect("valid");
        assert_eq!(hosts(&config), vec![Server::new("a", 7001), Server::new("b", 7002)]);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for url in ["127.0.0.1:6379", "redis-cluster://a:1,,b:2", "redis-cluster://", "http://x", "rediss://x:6380"] {
            match parse(url) {
                Err(BackendError::InvalidUrl(why)) => assert!(!why.is_empty(), "{url}"),
                other => panic!("{url} gave {other:?}"),
            }
        }
    }

    #[test]
    fn no_error_quotes_the_password() {
        let wrong = [
            "ridecast:s3cret@10.0.0.1:6379",
            "redis-cluster://ridecast:s3cret@a:1,,b:2",
            "http://ridecast:s3cret@x:6379",
            "s3cret@x://y",
            "redis://ridecast:s3cret@[::1:6379",
            "redis://ridecast:s3cret@x:notaport",
        ];
        for url in wrong {
            let error = parse(url).expect_err(url).to_string();
            assert!(!error.contains("s3cret"), "{url} gave {error}");
        }
    }
}
