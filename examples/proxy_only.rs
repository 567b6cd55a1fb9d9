//! Test harness: the proxy alone, with a tap that keeps nothing, so the forwarding path
//! can be load-tested before the mirror exists.
//!
//! `cargo run --release --example proxy_only -- --listen 127.0.0.1:0 --legacy http://127.0.0.1:8000 [--capture]`
//! prints `LISTENING <addr>` and serves until Ctrl-C. With `--capture`, `POST /evaluations`
//! exchanges are captured (and dropped by the tap), to measure the cost of the tee.
//! `RUST_LOG=shadowdiff=debug` shows per-request events.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use shadowdiff::live::proxy::{serve, Exchange, ProxyConfig, ProxyStats, Tap};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish after Ctrl-C.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Captures evaluation submissions when asked to, and keeps only a count.
struct DiscardingTap {
    capture: bool,
    delivered: AtomicU64,
}

impl Tap for DiscardingTap {
    fn capture(&self, method: &Method, path_and_query: &str) -> bool {
        self.capture && method == Method::POST && path_and_query.starts_with("/evaluations")
    }

    fn exchange(&self, _exchange: Exchange) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

struct Args {
    listen: String,
    legacy: String,
    capture: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { listen: "127.0.0.1:0".to_owned(), legacy: String::new(), capture: false };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--listen" => args.listen = argv.next().ok_or("--listen needs an address")?,
            "--legacy" => args.legacy = argv.next().ok_or("--legacy needs a URI")?,
            "--capture" => args.capture = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.legacy.is_empty() {
        return Err("--legacy http://HOST:PORT is required".to_owned());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("proxy_only: {message}");
            eprintln!("usage: proxy_only --listen ADDR --legacy http://HOST:PORT [--capture]");
            return ExitCode::from(64);
        }
    };
    let legacy = match args.legacy.parse() {
        Ok(uri) => uri,
        Err(error) => {
            eprintln!("proxy_only: --legacy `{}`: {error}", args.legacy);
            return ExitCode::from(64);
        }
    };
    let config = ProxyConfig {
        legacy,
        legacy_timeout: Duration::from_secs(10),
        via: Some("1.1 shadowdiff".to_owned()),
        forwarded_headers: true,
        max_capture_bytes: 1 << 20,
        limits: Default::default(),
    };

    let listener = match TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("proxy_only: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("LISTENING {addr}"),
        Err(error) => {
            eprintln!("proxy_only: {error}");
            return ExitCode::FAILURE;
        }
    }

    let tap = Arc::new(DiscardingTap { capture: args.capture, delivered: AtomicU64::new(0) });
    let stats = Arc::new(ProxyStats::new());
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });

    let mut server =
        tokio::spawn(serve(listener, config, Arc::clone(&tap) as Arc<dyn Tap>, Arc::clone(&stats), shutdown.clone()));
    let joined = tokio::select! {
        joined = &mut server => joined,
        () = shutdown.cancelled() => match tokio::time::timeout(DRAIN_DEADLINE, &mut server).await {
            Ok(joined) => joined,
            Err(_) => {
                eprintln!("proxy_only: connections still open after {DRAIN_DEADLINE:?}; giving up");
                server.abort();
                return ExitCode::FAILURE;
            }
        },
    };
    eprintln!(
        "proxy_only: {:?}; exchanges delivered to the tap: {}",
        stats.snapshot(),
        tap.delivered.load(Ordering::Relaxed)
    );
    match joined {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("proxy_only: {error}");
            ExitCode::from(64)
        }
        Err(error) => {
            eprintln!("proxy_only: server task failed: {error}");
            ExitCode::FAILURE
        }
    }
}
