//! Configuration: each service has a `Config` struct with defaults, and
//! environment variables named after its fields in upper case override
//! them (`ORCHESTRATOR_ADDR` sets `orchestrator_addr`), as in the design's
//! pod spec.

use figment::Figment;
use figment::providers::{Env, Serialized};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Loads `T` from its defaults overridden by the environment.
pub fn from_env<T: Serialize + DeserializeOwned + Default>() -> anyhow::Result<T> {
    from_env_with(T::default())
}

/// Loads `T` from the given defaults overridden by the environment.
pub fn from_env_with<T: Serialize + DeserializeOwned>(defaults: T) -> anyhow::Result<T> {
    let keys: Vec<String> = match serde_json::to_value(&defaults) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Figment::from(Serialized::defaults(defaults))
        .merge(
            Env::raw().filter(move |k| keys.iter().any(|key| k.as_str().eq_ignore_ascii_case(key))),
        )
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration in the environment: {e}"))
}

/// The Redis URL from `REDIS_URL`, or from the design's `REDIS_ADDR=host:port`.
pub fn redis_url(redis_url: Option<&str>, redis_addr: Option<&str>) -> Option<String> {
    let url = redis_url.map(str::trim).filter(|s| !s.is_empty());
    if let Some(url) = url {
        return Some(url.to_owned());
    }
    redis_addr
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|addr| format!("redis://{addr}"))
}

/// Accepts `host:port` as well as `http://host:port` for gRPC addresses, as
/// the design's pod spec writes `ORCHESTRATOR_ADDR=localhost:50051`.
pub fn grpc_endpoint(addr: &str) -> String {
    let addr = addr.trim();
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_prefers_url_then_addr() {
        assert_eq!(
            redis_url(Some("redis://a:1"), Some("b:2")).as_deref(),
            Some("redis://a:1")
        );
        assert_eq!(redis_url(None, Some("b:2")).as_deref(), Some("redis://b:2"));
        assert_eq!(redis_url(Some(""), None), None);
    }

    #[test]
    fn grpc_endpoint_adds_scheme() {
        assert_eq!(grpc_endpoint("localhost:50051"), "http://localhost:50051");
        assert_eq!(grpc_endpoint("http://x:1"), "http://x:1");
    }
}
