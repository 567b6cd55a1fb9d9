//! `shadowdiff serve`: wires the proxy, the mirror, the shadow, the admin listener and the
//! recording together, and shuts them down in order.
//!
//! Shutdown in three steps: decide (SIGTERM/SIGINT), tell (cancel the token: the proxy
//! stops accepting and finishes in-flight client requests), wait (pending comparisons, up
//! to `proxy.shutdown_grace_ms`; what is left is counted as abandoned), then flush the
//! recording. SIGHUP re-reads the config file and applies its sampling fraction.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::live::{LiveConfig, ShadowKind};
use crate::config::Config;
use crate::judge::engine::Engine;
use crate::live::admin::{self, AdminState};
use crate::live::fleet::{self, Member};
use crate::live::http_client::HttpClient;
use crate::live::legacy_queue::{self, QueueLength};
use crate::live::listener::{self, ConnectionLimits};
use crate::live::mirror::breaker::Breaker;
use crate::live::mirror::budget::Budget;
use crate::live::mirror::sampling::Sampler;
use crate::live::mirror::tap::{Handoff, MirrorTap};
use crate::live::mirror::Mirror;
use crate::live::proxy::{self, ProxyConfig, ProxyStats};
use crate::live::record::Recorder;
use crate::live::shadow::celery::CeleryShadow;
use crate::live::shadow::http::HttpShadow;
use crate::live::shadow::Shadow;
use crate::live::state::Live;

/// Runs until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let problems = config.live.serve_problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        bail!("config {} cannot serve:\n{}", config_path.display(), list.join("\n"));
    }
    let live_config = Arc::new(config.live.clone());
    match listener::raise_open_files_limit() {
        Ok(files) => tracing::info!(
            soft_before = files.soft_before,
            soft = files.soft,
            hard = files.hard,
            "open files limit (each client, legacy and shadow connection takes one)"
        ),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit; keeping the current one"),
    }
    let threads =
        live_config.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let proxy_listeners = bind_proxy(live_config.listen, threads)
        .await
        .with_context(|| format!("cannot listen on proxy.listen {}", live_config.listen))?;
    let proxy_address = proxy_listeners[0].local_addr()?;
    let admin_listener = TcpListener::bind(live_config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen {}", live_config.admin_listen))?;

    // Result polls of legacy, capped like the shadow's requests: descriptors stay bounded.
    let client = HttpClient::with_max_connections(live_config.legacy_max_connections);
    let shutdown = CancellationToken::new();
    let shadow = Arc::new(build_shadow(&live_config, shutdown.clone()).await?);
    let recorder = match &live_config.record {
        Some(settings) => Some(Arc::new(Recorder::start(settings.clone())?)),
        None => None,
    };
    let live = Arc::new(Live::new(
        Engine::new(config),
        Sampler::new(live_config.percent),
        Breaker::new(live_config.breaker_failures, live_config.breaker_cooldown),
    ));
    // Join the fleet before the first client: a restart resumes its totals first.
    let member = match &live_config.fleet {
        Some(settings) => {
            let port = proxy_address.port();
            let instance = settings.instance.clone().unwrap_or_else(|| fleet::default_instance(port));
            let member = Member::join(settings, instance, Arc::clone(&live))
                .await
                .context("cannot join the fleet (fleet.redis_url)")?;
            let member = Arc::new(member);
            tokio::spawn(Arc::clone(&member).run(shutdown.clone()));
            Some(member)
        }
        None => None,
    };
    let mirror = Arc::new(Mirror::new(
        Arc::clone(&live),
        Arc::clone(&live_config),
        Arc::clone(&shadow),
        client.clone(),
        recorder.clone(),
    ));
    let budget = Budget::new(live_config.max_pending_bytes);
    let proxy_stats = Arc::new(ProxyStats::new());
    let limits =
        ConnectionLimits { header_timeout: live_config.header_timeout, idle_timeout: live_config.idle_timeout };

    let legacy_queue = live_config.legacy_queue_length.clone().map(|probe| {
        let gauge = Arc::new(QueueLength::default());
        tokio::spawn(legacy_queue::poll(client.clone(), probe, Arc::clone(&gauge), shutdown.clone()));
        gauge
    });
    let admin_state = Arc::new(AdminState {
        live: Arc::clone(&live),
        legacy_queue,
        fleet: member.clone(),
        proxy: Arc::clone(&proxy_stats),
        mirror: Arc::clone(&mirror),
        token: live_config.admin_token.clone(),
        shadow: Arc::clone(&shadow),
        budget: Arc::clone(&budget),
    });
    let admin_address = admin_listener.local_addr()?;
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, limits, shutdown.clone()));
    let proxy_config = ProxyConfig {
        legacy: live_config.legacy_url.clone().unwrap_or_default().parse().context("legacy.url")?,
        legacy_timeout: live_config.legacy_timeout,
        via: live_config.via.clone(),
        forwarded_headers: live_config.forwarded_headers,
        max_capture_bytes: live_config.max_mirror_body_bytes,
        limits,
    };
    // One proxy and mirror per thread, each on its own listener and event loop; the first
    // runs here, beside the admin listener, the fleet and the Celery connections.
    let queue = live_config.mirror_queue.div_ceil(proxy_listeners.len()).max(1);
    let mut threads = Vec::with_capacity(proxy_listeners.len());
    for (index, listener) in proxy_listeners.into_iter().enumerate() {
        let mirror = if index == 0 { Arc::clone(&mirror) } else { Arc::new(mirror.shard()) };
        let (sender, receiver) = mpsc::channel(queue);
        let tap =
            Arc::new(MirrorTap::new(&live_config, sender, Arc::clone(&live), Arc::clone(&budget), Arc::clone(&mirror)));
        let thread = ProxyThread {
            listener,
            config: proxy_config.clone(),
            tap,
            stats: Arc::clone(&proxy_stats),
            shutdown: shutdown.clone(),
            mirror,
            handoff: receiver,
        };
        threads.push(if index == 0 { thread.spawn_here() } else { thread.start(index)? });
    }
    // Tests and scripts read this line to learn the bound ports.
    let signals = Signals::install();
    println!("LISTENING proxy={proxy_address} admin={admin_address}");
    tracing::info!(proxy = %proxy_address, admin = %admin_address, "shadowdiff serving");

    wait_for_signal(signals, &config_path, &live).await;
    tracing::info!("shutting down: no new connections");
    shutdown.cancel();
    let grace = live_config.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    for thread in &mut threads {
        match tokio::time::timeout_at(deadline, &mut thread.served).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "proxy ended with an error"),
            Ok(Err(_)) => tracing::warn!("proxy thread failed"),
            Err(_) => {
                tracing::warn!("client requests still open after the grace period");
                break;
            }
        }
    }
    // The proxies are gone, and with them the hand-offs' senders: the mirrors drain what
    // is left.
    let drained = tokio::time::timeout(grace, async {
        for thread in &mut threads {
            let _ = (&mut thread.drained).await;
        }
    })
    .await;
    let abandoned = if drained.is_err() { live.abandon_pending() } else { 0 };
    admin_task.abort();
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    if let Some(member) = member {
        match tokio::time::timeout(grace, member.write(true)).await {
            Ok(Ok(bytes)) => tracing::info!(bytes, "fleet state written"),
            Ok(Err(error)) => tracing::warn!(%error, "last fleet state not written"),
            Err(_) => tracing::warn!("last fleet state not written in time"),
        }
    }
    let snapshot = live.snapshot();
    tracing::info!(
        judged = snapshot.accounting.judged,
        abandoned,
        submissions = snapshot.accounting.submissions,
        "shadowdiff stopped"
    );
    Ok(())
}

/// The proxy's listening sockets: one, or one per thread sharing the address.
async fn bind_proxy(address: SocketAddr, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if threads <= 1 {
        return Ok(vec![TcpListener::bind(address).await?.into_std()?]);
    }
    listener::bind_shared(address, threads)
}

/// What one proxy thread runs: the proxy on its listener, and the mirror its hand-off
/// feeds.
struct ProxyThread {
    listener: std::net::TcpListener,
    config: ProxyConfig,
    tap: Arc<MirrorTap>,
    stats: Arc<ProxyStats>,
    shutdown: CancellationToken,
    mirror: Arc<Mirror>,
    handoff: mpsc::Receiver<Handoff>,
}

/// A proxy thread at work, as its shutdown is awaited.
struct RunningThread {
    /// The proxy's end: its connections finished after the shutdown.
    served: oneshot::Receiver<std::io::Result<()>>,
    /// The mirror's end: its hand-off emptied and every evaluation judged.
    drained: oneshot::Receiver<()>,
}

impl ProxyThread {
    /// Runs on the current runtime.
    fn spawn_here(self) -> RunningThread {
        let (served, served_receiver) = oneshot::channel();
        let (drained, drained_receiver) = oneshot::channel();
        tokio::spawn(self.run(served, drained));
        RunningThread { served: served_receiver, drained: drained_receiver }
    }

    /// Runs on a thread of its own, with a one-thread runtime.
    fn start(self, index: usize) -> std::io::Result<RunningThread> {
        let (served, served_receiver) = oneshot::channel();
        let (drained, drained_receiver) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name(format!("shadowdiff-proxy-{index}"))
            .spawn(move || runtime.block_on(self.run(served, drained)))?;
        Ok(RunningThread { served: served_receiver, drained: drained_receiver })
    }

    async fn run(self, served: oneshot::Sender<std::io::Result<()>>, drained: oneshot::Sender<()>) {
        let ProxyThread { listener, config, tap, stats, shutdown, mirror, handoff } = self;
        let mirror_task = tokio::spawn(Arc::clone(&mirror).run(handoff));
        let result = match TcpListener::from_std(listener) {
            Ok(listener) => proxy::serve(listener, config, tap, stats, shutdown).await,
            Err(error) => Err(error),
        };
        let _ = served.send(result);
        let _ = mirror_task.await;
        mirror.tracker().wait().await;
        let _ = drained.send(());
    }
}

/// The configured shadow: an HTTP upstream, or a Celery broker connection (`drive` builds it too).
pub(crate) async fn build_shadow(config: &LiveConfig, shutdown: CancellationToken) -> anyhow::Result<Shadow> {
    match &config.shadow {
        ShadowKind::Http { url, timeout, outcome, max_connections, headers } => {
            let base = url.clone().unwrap_or_default();
            // A client of its own, capped: a stalled shadow holds at most this many sockets.
            let client = HttpClient::with_max_connections(*max_connections);
            Ok(Shadow::Http(HttpShadow::new(
                client,
                *max_connections,
                base,
                *timeout,
                outcome.clone(),
                (**headers).clone(),
            )))
        }
        ShadowKind::Celery(settings) => {
            // A Redis that cannot be reached, refuses the TLS handshake or the credentials
            // stops `serve` here; the error names which one (broker, result backend) and
            // why, never its URL (it may hold a password).
            let shadow = CeleryShadow::connect((**settings).clone(), shutdown)
                .await
                .context("cannot connect to the Celery shadow's Redis")?;
            Ok(Shadow::Celery(shadow))
        }
    }
}

/// Returns on SIGTERM or SIGINT; applies the config's sampling on SIGHUP meanwhile.
/// The signals `serve` answers, installed before it says it listens: a SIGTERM sent as
/// soon as the `LISTENING` line is read still shuts down in order.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(term), Ok(int), Ok(hup)) => Some(Signals { term, int, hup }),
            _ => None,
        }
    }
}

async fn wait_for_signal(signals: Option<Signals>, config_path: &Path, live: &Live) {
    let Some(Signals { mut term, mut int, mut hup }) = signals else {
        tracing::warn!("cannot install signal handlers; waiting for Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match Config::load(config_path) {
                Ok(config) => {
                    live.sampler.set_percent(config.live.percent);
                    tracing::info!(percent = config.live.percent, "SIGHUP: sampling reloaded");
                }
                Err(error) => tracing::warn!(%error, "SIGHUP: config not reloaded"),
            },
        }
    }
}
