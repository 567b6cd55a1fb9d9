//! The Redis keys of the config (`broker_url` with `broker_use_ssl` and
//! `broker_transport_options`, the result backend's, the fleet's) into a
//! [`RedisSpec`], each problem naming its key. The URL itself is never quoted with its
//! password: messages show [`redacted`] URLs.

use std::path::PathBuf;

use super::live_raw::{RawTransportOptions, RawUseSsl};
use super::Problem;
use crate::celery::redis_target::{redacted, CertReqs, RedisSpec, RedisTarget, SentinelOptions, TlsOptions};

/// Where one Redis's keys are in the file, e.g. `shadow.celery.broker_url`,
/// `shadow.celery.broker_use_ssl`, `shadow.celery.broker_transport_options`.
pub(super) struct RedisKeys {
    pub url: &'static str,
    pub use_ssl: &'static str,
    pub transport_options: &'static str,
}

/// Checks what can be checked without reading files or connecting, and builds the spec.
pub(super) fn spec(
    problems: &mut Vec<Problem>,
    keys: &RedisKeys,
    url: &str,
    use_ssl: Option<&RawUseSsl>,
    transport: Option<&RawTransportOptions>,
) -> RedisSpec {
    let mut add = |key: String, message: String| problems.push(Problem { key, message });
    let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or_default();
    if !matches!(scheme, "redis" | "rediss" | "sentinel") {
        add(keys.url.into(), format!("{:?} is not a redis://, rediss:// or sentinel:// URL", redacted(url)));
    }
    let tls = use_ssl.map(|raw| {
        let path = |text: &str| (!text.is_empty()).then(|| PathBuf::from(text));
        let cert_reqs = if raw.ssl_cert_reqs.is_empty() {
            CertReqs::Required
        } else {
            CertReqs::parse(&raw.ssl_cert_reqs).unwrap_or_else(|| {
                add(
                    format!("{}.ssl_cert_reqs", keys.use_ssl),
                    format!("{:?} is not required, optional or none", raw.ssl_cert_reqs),
                );
                CertReqs::Required
            })
        };
        if scheme == "redis" {
            add(keys.use_ssl.into(), format!("TLS options need a rediss:// URL in {}", keys.url));
        }
        match (raw.ssl_certfile.is_empty(), raw.ssl_keyfile.is_empty()) {
            (false, true) => add(format!("{}.ssl_keyfile", keys.use_ssl), "is required with ssl_certfile".into()),
            (true, false) => add(format!("{}.ssl_certfile", keys.use_ssl), "is required with ssl_keyfile".into()),
            _ => {}
        }
        Box::new(TlsOptions {
            ca_certs: path(&raw.ssl_ca_certs),
            certfile: path(&raw.ssl_certfile),
            keyfile: path(&raw.ssl_keyfile),
            cert_reqs,
        })
    });
    let sentinel = transport.map(|raw| {
        if scheme != "sentinel" {
            add(keys.transport_options.into(), format!("master_name is for a sentinel:// URL in {}", keys.url));
        }
        if raw.master_name.is_empty() {
            add(format!("{}.master_name", keys.transport_options), "must not be empty".into());
        }
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Box::new(SentinelOptions {
            master_name: raw.master_name.clone(),
            username: text(&raw.sentinel_kwargs.username),
            password: text(&raw.sentinel_kwargs.password),
        })
    });
    if scheme == "sentinel" && sentinel.is_none() {
        add(
            keys.transport_options.into(),
            format!("a sentinel:// URL in {} needs {} = {{ master_name = \"…\" }}", keys.url, keys.transport_options),
        );
    }
    RedisSpec { url: url.to_owned(), tls, sentinel }
}

/// What `serve` would refuse when it opens the Redis: an unreadable certificate file
/// (named by its key) or a URL the client cannot parse.
pub(super) fn open_problems(problems: &mut Vec<Problem>, keys: &RedisKeys, which: &'static str, spec: &RedisSpec) {
    let before = problems.len();
    if let Some(tls) = &spec.tls {
        for (name, path) in
            [("ssl_ca_certs", &tls.ca_certs), ("ssl_certfile", &tls.certfile), ("ssl_keyfile", &tls.keyfile)]
        {
            if let Some(Err(e)) = path.as_ref().map(std::fs::read) {
                let path = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                problems.push(Problem {
                    key: format!("{}.{name}", keys.use_ssl),
                    message: format!("cannot read {path}: {e}"),
                });
            }
        }
    }
    if problems.len() == before {
        if let Err(e) = RedisTarget::open(which, spec) {
            problems.push(Problem { key: keys.url.into(), message: e.to_string() });
        }
    }
}
